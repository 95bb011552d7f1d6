//! What the word-problem generators share (the story families in `problems.rs`, the everyday
//! phrasing in `natural.rs`): the step a solution is made of, templates with `{placeholders}`,
//! and the forms of a person's pronoun.

use serde::{Deserialize, Serialize};

use crate::text::arithmetic::Op;

/// One step of a canonical solution: `a op b = result`, told in a sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub a: i64,
    pub op: Op,
    pub b: i64,
    pub result: i64,
    /// The canonical sentence: the event as the question tells it, then its arithmetic, e.g.
    /// "She buys 5 more, so 12 + 5 = 17 marbles."
    pub sentence: String,
}

/// `template` with each placeholder of `vars` ("{name}") replaced by its value, in order.
pub fn fill(template: &str, vars: &[(&str, String)]) -> String {
    vars.iter()
        .fold(template.to_string(), |s, (k, v)| s.replace(k, v))
}

/// The forms of a pronoun ("she", "he" or "they") as placeholders: `{pron}` and `{Pron}` the
/// subject, `{pos}` the possessive, `{obj}` the object.
pub fn pronoun(subject: &str) -> [(&'static str, String); 4] {
    let (pos, obj) = match subject {
        "she" => ("her", "her"),
        "he" => ("his", "him"),
        _ => ("their", "them"),
    };
    [
        ("{Pron}", cap(subject)),
        ("{pron}", subject.into()),
        ("{pos}", pos.into()),
        ("{obj}", obj.into()),
    ]
}

/// `s` with its first letter upper-case.
pub fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `s` with its first letter lower-case.
pub fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_with_the_pronouns_forms() {
        let mut vars = vec![("{name}", "Ben".to_string())];
        vars.extend(pronoun("he"));
        assert_eq!(
            fill(
                "{name} gives {obj} {pos} pen; {pron} thanks {name}. {Pron} smiles.",
                &vars
            ),
            "Ben gives him his pen; he thanks Ben. He smiles."
        );
        let they = fill("{Pron} ask {obj} for {pos} {thing}", &pronoun("they"));
        assert_eq!(
            they, "They ask them for their {thing}",
            "unknown ones are left"
        );
        assert_eq!(pronoun("she")[2].1, "her");
        assert_eq!(lower_first("Then"), "then");
        assert_eq!(cap(""), "");
    }
}
