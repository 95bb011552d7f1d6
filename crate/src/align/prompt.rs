//! The aligner's prompt: the reference implementation's format, inside the aligner model's
//! chat template.

use crate::error::Result;
use crate::text::{ChatTemplate, Message};

/// The reference format (configurable): `{query}`, `{prefix}` and `{original}` are filled in.
pub const DEFAULT_FORMAT: &str = "##Question: {query} | ##Answer_Prefix: {prefix} | ##Answer_Last_Sentence: {original} | ##Your_Revision: ";

#[derive(Debug, Clone)]
pub struct AlignerPrompt {
    pub format: String,
}

impl Default for AlignerPrompt {
    fn default() -> Self {
        Self {
            format: DEFAULT_FORMAT.to_string(),
        }
    }
}

impl AlignerPrompt {
    pub fn render(
        &self,
        template: &ChatTemplate,
        query: &str,
        prefix: &str,
        original: &str,
    ) -> Result<String> {
        // One pass, so text inside the query can't be mistaken for a placeholder.
        let mut user =
            String::with_capacity(self.format.len() + query.len() + prefix.len() + original.len());
        let mut rest = self.format.as_str();
        while let Some(open) = rest.find('{') {
            user.push_str(&rest[..open]);
            let after = &rest[open..];
            let (value, len) = match () {
                _ if after.starts_with("{query}") => (query, 7),
                _ if after.starts_with("{prefix}") => (prefix, 8),
                _ if after.starts_with("{original}") => (original, 10),
                _ => ("{", 1),
            };
            user.push_str(value);
            rest = &after[len..];
        }
        user.push_str(rest);
        template.render(&[Message::user(&user)], true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_reference_format_once() {
        let t = ChatTemplate::new("{% for m in messages %}[{{ m.content }}]{% endfor %}").unwrap();
        let p = AlignerPrompt::default()
            .render(&t, "Q {prefix}?", "P.", "O.")
            .unwrap();
        assert_eq!(
            p,
            "[##Question: Q {prefix}? | ##Answer_Prefix: P. | ##Answer_Last_Sentence: O. | ##Your_Revision: ]"
        );
    }
}
