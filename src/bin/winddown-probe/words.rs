//! Splitting a command string into words, as a POSIX shell would for the
//! simple cases: blanks separate words, `'…'` keeps everything literally,
//! `"…"` keeps blanks and honours `\"`, `\\`, `\$` and `` \` ``, and a
//! backslash outside quotes escapes the next character. No expansion of any
//! kind (`$VAR`, globs, `~`) happens: use `--shell` for that.

use std::fmt;

/// A command string that cannot be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// The string has no words.
    Empty,
    /// A quote opened at this byte offset is never closed.
    UnclosedQuote(usize),
    /// The string ends with a lone backslash.
    TrailingBackslash,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::Empty => f.write_str("the command is empty"),
            SplitError::UnclosedQuote(at) => write!(f, "the quote at byte {at} is never closed"),
            SplitError::TrailingBackslash => f.write_str("the command ends with a lone backslash"),
        }
    }
}

impl std::error::Error for SplitError {}

/// Splits `line` into words (see the module docs).
///
/// # Errors
///
/// [`SplitError`] if a quote is left open, the line ends in a backslash, or
/// there is no word at all.
pub(crate) fn split(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\\' => {
                let (_, next) = chars.next().ok_or(SplitError::TrailingBackslash)?;
                word.get_or_insert_with(String::new).push(next);
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => w.push(c),
                        None => return Err(SplitError::UnclosedQuote(at)),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c @ ('"' | '\\' | '$' | '`'))) => w.push(c),
                            Some((_, c)) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(SplitError::UnclosedQuote(at)),
                        },
                        Some((_, c)) => w.push(c),
                        None => return Err(SplitError::UnclosedQuote(at)),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    if words.is_empty() {
        return Err(SplitError::Empty);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn blanks_separate_words() {
        assert_eq!(ok("  sleep\t30 "), ["sleep", "30"]);
    }

    #[test]
    fn quotes_keep_blanks_and_join_with_neighbours() {
        assert_eq!(ok(r#"a 'b c'd "e \"f\" \n""#), ["a", "b cd", r#"e "f" \n"#]);
        assert_eq!(ok("''"), [""]);
    }

    #[test]
    fn backslash_escapes_outside_quotes() {
        assert_eq!(ok(r"a\ b c"), ["a b", "c"]);
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        assert_eq!(split("   "), Err(SplitError::Empty));
        assert_eq!(split("a 'b"), Err(SplitError::UnclosedQuote(2)));
        assert_eq!(split("a \"b\\\""), Err(SplitError::UnclosedQuote(2)));
        assert_eq!(split("a\\"), Err(SplitError::TrailingBackslash));
    }
}
