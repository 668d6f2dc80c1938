//! Sessions in Redis, shared by every instance. Values are sealed before they leave the process,
//! Redis expires them (`PX`), and a take is one atomic script, so two instances can never both
//! consume a single-use session. Keys are `{prefix}cvc:{project}:{session}`, so a session of
//! another project is simply not found and never touched.
//!
//! The vault itself never persists sessions; the Redis serving them should run without RDB/AOF
//! persistence for this keyspace (see the README): with persistence on, sealed codes would reach
//! Redis's disk, still encrypted with a key only the vault holds, until they expire.

use crate::redis_connection::RedisConnection;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use uuid::Uuid;

use super::{CvcError, CvcStore, StoredSession};

/// Gets the value; a single-use one is marked held (its flag byte set, its TTL untouched) and a
/// held one is not returned: atomic in Redis.
const TAKE_SCRIPT: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return nil end
local flag = string.sub(value, 1, 1)
if flag == '2' then return nil end
if flag == '0' then redis.call('SETRANGE', KEYS[1], 0, '2') end
return value
";

/// Makes a held session usable again; its TTL is untouched, and a key deleted or expired in the
/// meantime is not recreated.
const RELEASE_SCRIPT: &str = r"
if redis.call('GETRANGE', KEYS[1], 0, 0) == '2' then
  redis.call('SETRANGE', KEYS[1], 0, '0')
end
return 0
";

/// Stores a reusable (test) session and appends it to its project's list; past the cap the
/// oldest go, list entry and session both. `ARGV[5]` is the session key without its id.
const PUT_REUSABLE_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local excess = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[4])
for i = 1, excess do
  local old = redis.call('LPOP', KEYS[2])
  redis.call('DEL', ARGV[5] .. old)
end
return 0
";

const SINGLE_USE: u8 = b'0';
const REUSABLE: u8 = b'1';

pub struct RedisCvcStore {
    connection: RedisConnection,
    take: redis::Script,
    release: redis::Script,
    put_reusable: redis::Script,
    prefix: String,
    max_reusable_per_project: usize,
}

fn unavailable(e: redis::RedisError) -> CvcError {
    CvcError::Unavailable(e)
}

impl RedisCvcStore {
    /// Sessions on `connection` (see [`crate::redis_connection`]): a Redis that is down makes
    /// session calls fail fast with `Unavailable`, never hang.
    pub fn new(connection: RedisConnection, prefix: &str, max_reusable_per_project: usize) -> Self {
        Self {
            connection,
            take: redis::Script::new(TAKE_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
            put_reusable: redis::Script::new(PUT_REUSABLE_SCRIPT),
            prefix: prefix.to_owned(),
            max_reusable_per_project: max_reusable_per_project.max(1),
        }
    }

    fn key(&self, id: Uuid, project_id: &str) -> String {
        format!("{}cvc:{project_id}:{id}", self.prefix)
    }

    /// The list of a project's reusable (test) sessions, oldest first.
    fn reusable_list(&self, project_id: &str) -> String {
        format!("{}cvc-reusable:{project_id}", self.prefix)
    }
}

#[async_trait]
impl CvcStore for RedisCvcStore {
    async fn put(&self, id: Uuid, session: StoredSession, ttl: Duration) -> Result<(), CvcError> {
        let mut value = Vec::with_capacity(1 + session.sealed.len());
        value.push(if session.reusable {
            REUSABLE
        } else {
            SINGLE_USE
        });
        value.extend_from_slice(&session.sealed);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.connection.get().clone();
        if session.reusable {
            let _: i64 = self
                .put_reusable
                .key(self.key(id, &session.project_id))
                .key(self.reusable_list(&session.project_id))
                .arg(value)
                .arg(ttl_ms)
                .arg(id.to_string())
                .arg(self.max_reusable_per_project)
                .arg(format!("{}cvc:{}:", self.prefix, session.project_id))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        let _: () = redis::cmd("SET")
            .arg(self.key(id, &session.project_id))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take(&self, id: Uuid, project_id: &str) -> Result<Option<StoredSession>, CvcError> {
        let mut conn = self.connection.get().clone();
        let value: Option<Vec<u8>> = self
            .take
            .key(self.key(id, project_id))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(value.and_then(|v| {
            let (flag, sealed) = v.split_first()?;
            Some(StoredSession {
                project_id: project_id.to_owned(),
                reusable: *flag == REUSABLE,
                sealed: sealed.to_vec(),
            })
        }))
    }

    async fn release(&self, id: Uuid, project_id: &str) -> Result<(), CvcError> {
        let mut conn = self.connection.get().clone();
        let _: i64 = self
            .release
            .key(self.key(id, project_id))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn consume(&self, id: Uuid, project_id: &str) -> Result<(), CvcError> {
        let mut conn = self.connection.get().clone();
        let _: u64 = conn
            .del(self.key(id, project_id))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete(&self, id: Uuid, project_id: &str) -> Result<bool, CvcError> {
        let mut conn = self.connection.get().clone();
        let (removed, _): (u64, u64) = redis::pipe()
            .atomic()
            .del(self.key(id, project_id))
            .lrem(self.reusable_list(project_id), 1, id.to_string())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn ping(&self) -> Result<(), CvcError> {
        let mut conn = self.connection.get().clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
