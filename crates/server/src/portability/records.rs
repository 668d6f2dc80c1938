//! Records out of an input stream (CSV or JSON lines), each with the line it starts on, or the
//! reason it cannot be read: a bad record is refused, never fatal. Only the stream failing (a
//! read error, an integrity failure of an encrypted input) stops the reading.

use std::collections::HashMap;
use std::io::BufRead;

use serde_json::Value;

use super::layout::{Field, Mapping, RawRecord};
use super::{Format, PortError};

/// One record of the input, or the reason it is refused.
pub enum Item {
    Record { line: u64, record: RawRecord },
    Refused { line: u64, reason: String },
}

/// Reads records one by one.
pub struct Records {
    inner: Inner,
    /// Whether the stream is decrypted as it is read (its read errors are integrity failures).
    encrypted: bool,
}

enum Inner {
    Csv {
        reader: csv::Reader<Box<dyn BufRead + Send>>,
        columns: HashMap<Field, usize>,
        width: usize,
        row: csv::ByteRecord,
    },
    Jsonl {
        reader: Box<dyn BufRead + Send>,
        mapping: Mapping,
        line: u64,
        buf: zeroize::Zeroizing<Vec<u8>>,
    },
}

impl Records {
    /// Starts reading; for CSV, reads the header and finds the columns.
    ///
    /// # Errors
    /// [`PortError::Input`] when a CSV header lacks the id's or the number's column (or is not
    /// UTF-8); a failed read as [`Self::next_item`].
    pub fn open(
        input: Box<dyn BufRead + Send>,
        format: Format,
        mapping: &Mapping,
        encrypted: bool,
    ) -> Result<Self, PortError> {
        let inner = match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(true)
                    .from_reader(input);
                let header = reader
                    .byte_headers()
                    .map_err(|e| stream_failed(e, encrypted))?
                    .iter()
                    .map(|h| {
                        std::str::from_utf8(h).map(|h| h.trim_start_matches('\u{feff}').to_owned())
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| PortError::Input("the CSV header is not UTF-8".into()))?;
                let columns = mapping.columns(&header);
                for (needed, also) in [
                    (Field::Id, None),
                    (Field::Number, Some(Field::AccountNumber)),
                ] {
                    if !columns.contains_key(&needed)
                        && also.is_none_or(|f| !columns.contains_key(&f))
                    {
                        return Err(PortError::Input(format!(
                            "the CSV header has no column for `{}` (name it with --map {}=COLUMN)",
                            needed.name(),
                            needed.name()
                        )));
                    }
                }
                Inner::Csv {
                    reader,
                    columns,
                    width: header.len(),
                    row: csv::ByteRecord::new(),
                }
            }
            Format::Jsonl => Inner::Jsonl {
                reader: input,
                mapping: mapping.clone(),
                line: 0,
                buf: zeroize::Zeroizing::new(Vec::new()),
            },
        };
        Ok(Self { inner, encrypted })
    }

    /// The next record, or `None` at the end.
    ///
    /// # Errors
    /// [`PortError::Integrity`] when an encrypted stream fails (tampered with, cut short),
    /// [`PortError::Input`] when a plain one cannot be read.
    pub fn next_item(&mut self) -> Result<Option<Item>, PortError> {
        let encrypted = self.encrypted;
        match &mut self.inner {
            Inner::Csv {
                reader,
                columns,
                width,
                row,
            } => {
                if !reader
                    .read_byte_record(row)
                    .map_err(|e| stream_failed(e, encrypted))?
                {
                    return Ok(None);
                }
                let line = row.position().map_or(0, csv::Position::line);
                Ok(Some(csv_record(row, columns, *width, line)))
            }
            Inner::Jsonl {
                reader,
                mapping,
                line,
                buf,
            } => loop {
                buf.clear();
                let n = reader
                    .read_until(b'\n', buf)
                    .map_err(|e| stream_failed(e, encrypted))?;
                if n == 0 {
                    return Ok(None);
                }
                *line += 1;
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(json_record(buf, mapping, *line)));
            },
        }
    }
}

fn stream_failed(e: impl std::fmt::Display, encrypted: bool) -> PortError {
    if encrypted {
        PortError::Integrity(e.to_string())
    } else {
        PortError::Input(format!("cannot read the input: {e}"))
    }
}

fn csv_record(
    row: &csv::ByteRecord,
    columns: &HashMap<Field, usize>,
    width: usize,
    line: u64,
) -> Item {
    let refused = |reason: &str| Item::Refused {
        line,
        reason: reason.to_owned(),
    };
    if row.len() < width {
        return refused("missing_column");
    }
    if row.len() > width {
        return refused("extra_column");
    }
    let mut record = RawRecord::default();
    for (field, i) in columns {
        let Some(bytes) = row.get(*i) else {
            return refused("missing_column");
        };
        match std::str::from_utf8(bytes) {
            Ok(text) => record.set(*field, Value::String(text.to_owned())),
            Err(_) => return refused("invalid_encoding"),
        }
    }
    Item::Record { line, record }
}

fn json_record(bytes: &[u8], mapping: &Mapping, line: u64) -> Item {
    let refused = |reason: &str| Item::Refused {
        line,
        reason: reason.to_owned(),
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return refused("invalid_encoding");
    };
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return refused("invalid_json");
    };
    let mut record = RawRecord::default();
    for (key, value) in object {
        if let Some(field) = mapping.field_of(&key) {
            record.set(field, value);
        }
    }
    Item::Record { line, record }
}
