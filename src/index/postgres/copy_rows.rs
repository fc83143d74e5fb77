//! PostgreSQL's binary COPY format, read as it streams (see
//! <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>).

use crate::index::{IndexError, kv::Visit};

/// PostgreSQL's binary COPY format, read as it streams: the header, then each row as a field
/// count and each field as a length and its bytes, then -1. Rows normally come one to a
/// message; one split across messages is put together from a carried remainder.
///
/// Not tokio-postgres's `BinaryCopyOutStream`: that one parses on the runtime's two threads
/// and allocates per row, and a whole-index read is three million rows.
#[derive(Default)]
pub(super) struct CopyRows {
    header_read: bool,
    ended: bool,
    /// An incomplete row (or header) carried to the next message.
    carried: Vec<u8>,
}

/// `PGCOPY\n\377\r\n\0`, then flags and the header extension's length.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Why a COPY stream could not be read.
fn malformed(why: &str) -> IndexError {
    IndexError::Engine(format!("postgres: unreadable COPY data ({why})"))
}

impl CopyRows {
    pub(super) fn feed(&mut self, chunk: &[u8], visit: &mut Visit<'_>) -> Result<(), IndexError> {
        if self.carried.is_empty() {
            let used = self.parse(chunk, visit)?;
            self.carried.extend_from_slice(&chunk[used..]);
        } else {
            let mut joined = std::mem::take(&mut self.carried);
            joined.extend_from_slice(chunk);
            let used = self.parse(&joined, visit)?;
            joined.drain(..used);
            self.carried = joined;
        }
        Ok(())
    }

    /// Reads what is whole in `data`; how many bytes that was.
    fn parse(&mut self, data: &[u8], visit: &mut Visit<'_>) -> Result<usize, IndexError> {
        let mut at = 0;
        if !self.header_read {
            let Some(fixed) = data.get(..SIGNATURE.len() + 8) else {
                return Ok(0);
            };
            if !fixed.starts_with(SIGNATURE) {
                return Err(malformed("no binary COPY signature"));
            }
            let extension =
                u32::from_be_bytes(fixed[SIGNATURE.len() + 4..].try_into().unwrap_or_default());
            let end = fixed.len() + extension as usize;
            if data.len() < end {
                return Ok(0);
            }
            self.header_read = true;
            at = end;
        }
        while at < data.len() {
            if self.ended {
                return Err(malformed("data after the end"));
            }
            match row(&data[at..])? {
                Row::End => {
                    self.ended = true;
                    at += 2;
                }
                Row::Partial => break,
                Row::Whole(used, key, value) => {
                    visit(key, value)?;
                    at += used;
                }
            }
        }
        Ok(at)
    }

    /// The stream ended where it should: after its last row, nothing carried.
    pub(super) fn finished(&self) -> Result<(), IndexError> {
        match (self.ended, self.carried.is_empty()) {
            (true, true) => Ok(()),
            (_, false) => Err(malformed("a row cut short")),
            (false, true) => Err(malformed("no end marker")),
        }
    }
}

enum Row<'a> {
    /// The end marker.
    End,
    /// Not all there yet.
    Partial,
    /// A (key, value) row and its length.
    Whole(usize, &'a [u8], &'a [u8]),
}

/// The row `data` starts with.
fn row(data: &[u8]) -> Result<Row<'_>, IndexError> {
    let Some(count) = data.get(..2) else {
        return Ok(Row::Partial);
    };
    match i16::from_be_bytes([count[0], count[1]]) {
        -1 => return Ok(Row::End),
        2 => {}
        other => return Err(malformed(&format!("{other} fields in a row, not 2"))),
    }
    let mut at = 2;
    let mut fields = [&data[..0]; 2];
    for field in &mut fields {
        let Some(length) = data.get(at..at + 4) else {
            return Ok(Row::Partial);
        };
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        let length = usize::try_from(length).map_err(|_| malformed("a NULL key or value"))?;
        at += 4;
        let Some(bytes) = data.get(at..at + length) else {
            return Ok(Row::Partial);
        };
        *field = bytes;
        at += length;
    }
    Ok(Row::Whole(at, fields[0], fields[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::kv::KvPair;

    fn header() -> Vec<u8> {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0u32.to_be_bytes());
        data
    }

    fn encoded(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut data = 2i16.to_be_bytes().to_vec();
        for field in [key, value] {
            data.extend_from_slice(&(field.len() as i32).to_be_bytes());
            data.extend_from_slice(field);
        }
        data
    }

    fn read(chunks: &[&[u8]]) -> Result<Vec<KvPair>, IndexError> {
        let mut rows = CopyRows::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            rows.feed(chunk, &mut |k, v| {
                seen.push((k.to_vec(), v.to_vec()));
                Ok(())
            })?;
        }
        rows.finished().map(|()| seen)
    }

    #[test]
    fn rows_are_read_however_the_stream_is_cut() {
        let mut whole = header();
        whole.extend(encoded(b"tkey", b"\x01{}"));
        whole.extend(encoded(b"", b""));
        whole.extend(encoded(b"mkey", &[7; 300]));
        whole.extend_from_slice(&(-1i16).to_be_bytes());
        let expected = vec![
            (b"tkey".to_vec(), b"\x01{}".to_vec()),
            (Vec::new(), Vec::new()),
            (b"mkey".to_vec(), vec![7; 300]),
        ];
        assert_eq!(read(&[&whole]).unwrap(), expected);
        for cut in 1..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(read(&[a, b]).unwrap(), expected, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(read(&bytes).unwrap(), expected);
    }

    #[test]
    fn an_empty_range_is_a_header_and_the_end() {
        let mut whole = header();
        whole.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(read(&[&whole]).unwrap().is_empty());
    }

    #[test]
    fn malformed_streams_are_refused() {
        let mut ended = header();
        ended.extend_from_slice(&(-1i16).to_be_bytes());
        let row = encoded(b"k", b"v");
        let start = header();
        let mut three = header();
        three.extend_from_slice(&3i16.to_be_bytes());
        let mut null = header();
        null.extend_from_slice(&2i16.to_be_bytes());
        null.extend_from_slice(&(-1i32).to_be_bytes());
        let cases: [(&str, Vec<&[u8]>); 6] = [
            ("signature", vec![b"COPY-----------------"]),
            ("no end marker", vec![&start, &row]),
            ("a row cut short", vec![&start, &row[..5]]),
            ("data after the end", vec![&ended, &row]),
            ("fields", vec![&three]),
            ("NULL", vec![&null]),
        ];
        for (why, chunks) in cases {
            let error = read(&chunks).unwrap_err().to_string();
            assert!(error.contains(why), "{why}: {error}");
        }
    }
}
