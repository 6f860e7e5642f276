//! Finds `api.api_key` at the start of a JSON body without parsing the
//! rest, so a collection request whose key is in its body is authenticated
//! before the server reads, decompresses or decodes more of it.

use serde_json::Value;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyScan {
    /// The `api` member, and its `api_key` when it is a string.
    Found(Option<String>),
    /// The object ended without an `api` member.
    Absent,
    /// The bytes so far end inside the object.
    NeedMore,
    /// The body is JSON, but not an object.
    NotAnObject,
    Malformed(String),
}

/// Scans the top-level members of the object in `bytes` up to `api`.
/// `complete` says whether `bytes` is the whole body.
pub(crate) fn scan_api_key(bytes: &[u8], complete: bool) -> KeyScan {
    let mut scanner = Scanner { bytes, at: 0 };
    match scanner.top_level() {
        Ok(scan) => scan,
        Err(Stop::NeedMore) if complete => KeyScan::Malformed("the body ends early".into()),
        Err(Stop::NeedMore) => KeyScan::NeedMore,
        Err(Stop::Malformed(why)) => KeyScan::Malformed(why),
    }
}

enum Stop {
    NeedMore,
    Malformed(String),
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&mut self) -> Result<u8, Stop> {
        while let Some(&byte) = self.bytes.get(self.at) {
            if !matches!(byte, b' ' | b'\t' | b'\r' | b'\n') {
                return Ok(byte);
            }
            self.at += 1;
        }
        Err(Stop::NeedMore)
    }

    fn expect(&mut self, wanted: u8) -> Result<(), Stop> {
        let found = self.peek()?;
        if found != wanted {
            return Err(malformed(self.at, found, wanted));
        }
        self.at += 1;
        Ok(())
    }

    fn top_level(&mut self) -> Result<KeyScan, Stop> {
        if self.peek()? != b'{' {
            return Ok(KeyScan::NotAnObject);
        }
        self.at += 1;
        if self.peek()? == b'}' {
            return Ok(KeyScan::Absent);
        }
        loop {
            let name_start = self.at;
            self.skip_string()?;
            let name = &self.bytes[name_start..self.at];
            self.expect(b':')?;
            self.peek()?;
            let value_start = self.at;
            self.skip_value()?;
            if name == b"\"api\"" {
                let api: Value = serde_json::from_slice(&self.bytes[value_start..self.at])
                    .map_err(|e| Stop::Malformed(format!("api is not valid: {e}")))?;
                let key = api
                    .get("api_key")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                return Ok(KeyScan::Found(key));
            }
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.peek()?;
                }
                b'}' => return Ok(KeyScan::Absent),
                other => return Err(malformed(self.at, other, b',')),
            }
        }
    }

    /// A string, from its opening quote to past its closing one.
    fn skip_string(&mut self) -> Result<(), Stop> {
        self.expect(b'"')?;
        while let Some(&byte) = self.bytes.get(self.at) {
            self.at += 1;
            match byte {
                b'"' => return Ok(()),
                b'\\' => self.at += 1,
                _ => {}
            }
        }
        Err(Stop::NeedMore)
    }

    /// Any value; containers are skipped by counting brackets outside
    /// strings, without building anything.
    fn skip_value(&mut self) -> Result<(), Stop> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut in_string = false;
                while let Some(&byte) = self.bytes.get(self.at) {
                    self.at += 1;
                    if in_string {
                        match byte {
                            b'"' => in_string = false,
                            b'\\' => self.at += 1,
                            _ => {}
                        }
                        continue;
                    }
                    match byte {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                }
                Err(Stop::NeedMore)
            }
            _ => {
                let start = self.at;
                while let Some(&byte) = self.bytes.get(self.at) {
                    if matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        return if self.at > start {
                            Ok(())
                        } else {
                            Err(malformed(self.at, byte, b'"'))
                        };
                    }
                    self.at += 1;
                }
                Err(Stop::NeedMore)
            }
        }
    }
}

fn malformed(at: usize, found: u8, wanted: u8) -> Stop {
    Stop::Malformed(format!(
        "the body is not valid JSON: expected {:?} at byte {at}, found {:?}",
        wanted as char, found as char
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(key: &str) -> KeyScan {
        KeyScan::Found(Some(key.to_string()))
    }

    #[test]
    fn the_key_is_found_wherever_it_is_among_the_members() {
        let body = br#"{"collection": "e", "api": {"api_key": "k1", "library": {"name": "x"}}, "properties": {"#;
        assert_eq!(scan_api_key(body, false), found("k1"));
        let after_events =
            br#"{"events": [{"collection": "a", "properties": {"s": "]}\"{["}}], "api": {"api_key": "k2"}}"#;
        assert_eq!(scan_api_key(after_events, true), found("k2"));
        assert_eq!(
            scan_api_key(br#"{"api": {"api_key": 5}}"#, true),
            KeyScan::Found(None)
        );
        assert_eq!(
            scan_api_key(br#"{"a": 1, "b": true}"#, true),
            KeyScan::Absent
        );
        assert_eq!(scan_api_key(b" {} ", true), KeyScan::Absent);
    }

    #[test]
    fn an_unfinished_prefix_asks_for_more() {
        let body = br#"{"events": [{"collection": "a", "properties": {"s": "x"#;
        assert_eq!(scan_api_key(body, false), KeyScan::NeedMore);
        assert!(matches!(scan_api_key(body, true), KeyScan::Malformed(_)));
        assert_eq!(
            scan_api_key(br#"{"api": {"api_ke"#, false),
            KeyScan::NeedMore
        );
        assert_eq!(scan_api_key(b"", false), KeyScan::NeedMore);
    }

    #[test]
    fn other_shapes_are_told_apart() {
        assert_eq!(scan_api_key(b"[1, 2]", true), KeyScan::NotAnObject);
        assert!(matches!(
            scan_api_key(b"{not json", true),
            KeyScan::Malformed(_)
        ));
        assert!(matches!(
            scan_api_key(br#"{"a" 1}"#, true),
            KeyScan::Malformed(_)
        ));
        assert!(matches!(
            scan_api_key(br#"{"a": 1 "b": 2}"#, true),
            KeyScan::Malformed(_)
        ));
    }
}
