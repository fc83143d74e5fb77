//! The `Connection` field's grammar (RFC 9110 §7.6.1): a list of options, `close` and
//! `keep-alive` managing the connection itself, any other naming a field that is hop-by-hop on
//! this message. Read here for every head that passes as bytes, both ways.

/// One entry of a `Connection` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionOption<'a> {
    Close,
    KeepAlive,
    /// A field to drop before the message goes on.
    Names(&'a [u8]),
}

/// The options of one `Connection` value, blanks between commas skipped.
pub fn connection_options(value: &[u8]) -> impl Iterator<Item = ConnectionOption<'_>> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
        .map(|token| {
            if token.eq_ignore_ascii_case(b"close") {
                ConnectionOption::Close
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                ConnectionOption::KeepAlive
            } else {
                ConnectionOption::Names(token)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::{ConnectionOption::*, *};

    #[test]
    fn options_are_told_apart_in_any_case_and_blanks_skipped() {
        let options: Vec<_> = connection_options(b" Keep-Alive ,, CLOSE, X-Hop,te").collect();
        assert_eq!(options, [KeepAlive, Close, Names(b"X-Hop"), Names(b"te")]);
        assert_eq!(connection_options(b"").count(), 0);
    }
}
