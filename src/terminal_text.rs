//! Text from elsewhere (a machine's file names, a remote command's stderr) made safe to show on
//! this terminal: control characters and bytes that are not UTF-8 are escaped, so an escape
//! sequence cannot restyle or rewrite the screen, and a `\r` or a newline in a name cannot forge
//! a line of n10n-dev's own.

/// `bytes` as one line: every control character escaped (`\n`, `\r`, `\t`, `\x1b`, `\u{9b}`),
/// bytes that are not UTF-8 as `\xNN`, and `\` doubled, so that the line reads back unambiguously.
pub fn one_line(bytes: &[u8]) -> String {
    escape(bytes, false)
}

/// `bytes` as the lines they are: as `one_line`, but newlines and tabs kept and `\` left alone
/// (for a remote's messages of several lines).
pub fn lines(bytes: &[u8]) -> String {
    escape(bytes, true)
}

fn escape(bytes: &[u8], keep_layout: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' | '\t' if keep_layout => out.push(c),
                '\\' if !keep_layout => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() && (c as u32) < 0x80 => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_broken_utf8_are_escaped_and_the_rest_kept() {
        let name = b"caf\xc3\xa9 \x1b[2Kdone\r\nerror: forged\\\xff\xc2\x9b";
        assert_eq!(
            one_line(name),
            "café \\x1b[2Kdone\\r\\nerror: forged\\\\\\xff\\u{9b}"
        );
        assert_eq!(
            lines(b"line one\n\tline two\x1b]0;title\x07\r"),
            "line one\n\tline two\\x1b]0;title\\x07\\r"
        );
    }
}
