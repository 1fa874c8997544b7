//! The argv of an allowed request: the prefix's words plus the request
//! split on spaces and tabs. Never a shell, never a glob, no quoting.

/// `shell_words(prefix) ++ request split on spaces and tabs` (empty fields
/// dropped; no quoting, globbing or expansion of the request).
pub(crate) fn argv(prefix_words: &[String], request: &str) -> Vec<String> {
    prefix_words
        .iter()
        .cloned()
        .chain(
            request
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .map(str::to_owned),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_splits_on_blanks_only() {
        let p = vec!["printf".to_string(), "<%s>\\n".to_string()];
        assert_eq!(
            argv(&p, "  a\t'b c'  $(x) ;|&  "),
            vec!["printf", "<%s>\\n", "a", "'b", "c'", "$(x)", ";|&"]
        );
        assert_eq!(argv(&[], ""), Vec::<String>::new());
    }
}
