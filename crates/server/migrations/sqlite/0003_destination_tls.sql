-- Per-project TLS settings for a processor host: extra roots and a client certificate for
-- mutual TLS. The private key is sealed like card data (data key, AAD binding project and host).
CREATE TABLE destination_tls (
    project_id       TEXT    NOT NULL REFERENCES projects(id),
    host             TEXT    NOT NULL,
    ca_pem           TEXT,
    client_cert_pem  TEXT,
    key_version      INTEGER,
    key_nonce        BLOB,
    key_ciphertext   BLOB,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (project_id, host)
);
