//! Word problems in everyday phrasing: the shapes hand-written problems take and the story
//! families in `problems.rs` don't. A total that starts as a product ("3 packs of 12 pencils",
//! "14 cookies a day for 6 days"); two events told in one sentence; halves, doubles and thirds
//! told in words; a second person compared with the first; a share per person; what is still
//! needed to reach a goal; and shopping paid with a bill.
//!
//! Every step still quotes the clause it computes ("She gives 9 to her brother, so 36 - 9 = 27
//! pencils."), so these solutions teach the habit the other families teach: find the next
//! clause of the question by copying, then compute it.

use rand::Rng;
use rand::rngs::SmallRng;

use super::story::{Step, cap, fill, lower_first, pronoun};
use crate::text::arithmetic::Op;

/// What is counted, the container it comes in (singular, plural), and who gives or gets.
const THINGS: &[(&str, &str, &str)] = &[
    ("pencils", "pack", "packs"),
    ("eggs", "carton", "cartons"),
    ("stickers", "sheet", "sheets"),
    ("cookies", "box", "boxes"),
    ("beads", "bag", "bags"),
    ("cards", "deck", "decks"),
    ("apples", "basket", "baskets"),
    ("bottles", "crate", "crates"),
    ("crayons", "box", "boxes"),
    ("marbles", "jar", "jars"),
];

const OTHERS: &[&str] = &[
    "{pos} brother",
    "{pos} sister",
    "a friend",
    "a neighbour",
    "{pos} cousin",
    "{pos} teacher",
];

const ITEMS: &[&str] = &[
    "notebooks",
    "pens",
    "tickets",
    "sandwiches",
    "comic books",
    "plants",
];

/// The names of the story families that tell events one per sentence, with he or she.
const PEOPLE: &[(&str, &str)] = &[
    ("Maria", "she"),
    ("Tom", "he"),
    ("Lena", "she"),
    ("Carlos", "he"),
    ("Aisha", "she"),
    ("Noah", "he"),
    ("Yuki", "she"),
    ("Liam", "he"),
    ("Zoe", "she"),
    ("Kwame", "he"),
    ("Ines", "she"),
    ("Raj", "he"),
];

/// A problem being told: the question's sentences, the solution's steps, the running value.
struct Story {
    vars: Vec<(&'static str, String)>,
    text: Vec<String>,
    steps: Vec<Step>,
    value: i64,
    unit: String,
}

impl Story {
    fn fill(&self, template: &str) -> String {
        fill(template, &self.vars)
    }

    /// A sentence of the question that is one step: tells `clause`, then computes it.
    fn say(&mut self, clause: &str, a: i64, op: Op, b: i64, unit: &str) -> Option<i64> {
        self.text.push(format!("{clause}."));
        self.step(clause, a, op, b, unit)
    }

    /// One step: `a op b` when it is a whole number in range, quoted with its clause.
    fn step(&mut self, clause: &str, a: i64, op: Op, b: i64, unit: &str) -> Option<i64> {
        let result = op.apply(a, b).filter(|r| (1..=999).contains(r))?;
        let sentence = format!(
            "{}, so {a} {} {b} = {result} {unit}.",
            cap(clause.trim_end_matches('.')),
            op.symbol()
        );
        self.steps.push(Step {
            a,
            op,
            b,
            result,
            sentence,
        });
        self.value = result;
        Some(result)
    }
}

/// An event on the running value: its clause (with the pronoun, no final period), op, operand.
fn event(rng: &mut SmallRng, story: &Story) -> Option<(String, Op, i64)> {
    let v = story.value;
    let (templates, op, k): (&[&str], Op, i64) = match rng.random_range(0..4) {
        0 => (
            &[
                "{Pron} buys {k} more",
                "{Other} gives {obj} {k} more {thing}",
                "{Pron} finds {k} {thing}",
                "{Pron} gets {k} more from {other}",
                "{Pron} adds {k} {thing}",
            ],
            Op::Add,
            rng.random_range(2..=25),
        ),
        1 if v > 3 => (
            &[
                "{Pron} gives {k} to {other}",
                "{Pron} uses {k} of them",
                "{Pron} sells {k} {thing}",
                "{Pron} loses {k}",
                "{Pron} gives away {k} {thing}",
            ],
            Op::Sub,
            rng.random_range(2..v.min(40)),
        ),
        2 if v <= 60 => match rng.random_range(0..3) {
            0 => (&["{Pron} doubles {pos} {thing}"], Op::Mul, 2),
            1 => (&["The number of {thing} triples"], Op::Mul, 3),
            _ => (
                &[
                    "{Pron} ends up with {k} times as many",
                    "{Pron} collects until {pron} has {k} times as many",
                ],
                Op::Mul,
                rng.random_range(2..=4),
            ),
        },
        3 if v % 2 == 0 && v >= 4 => (
            &[
                "{Pron} gives half of them to {other}",
                "{Pron} loses half of them",
                "Half of them are used",
            ],
            Op::Div,
            2,
        ),
        3 if v % 3 == 0 && v >= 6 => (&["{Pron} keeps only a third of them"], Op::Div, 3),
        3 if v % 4 == 0 && v >= 8 => (&["{Pron} keeps a quarter of them"], Op::Div, 4),
        _ => return None,
    };
    let clause = story
        .fill(templates[rng.random_range(0..templates.len())])
        .replace("{k}", &k.to_string());
    Some((clause, op, k))
}

/// The opening: a plain count, or a product (containers × contents, a rate × a time).
fn opening(rng: &mut SmallRng, story: &mut Story) -> Option<()> {
    if rng.random_bool(0.35) {
        let n = rng.random_range(6..=60);
        let t = [
            "{name} has {n} {thing}",
            "At first, {name} has {n} {thing}",
            "{name} owns {n} {thing}",
        ][rng.random_range(0..3)];
        story
            .text
            .push(story.fill(t).replace("{n}", &n.to_string()) + ".");
        story.value = n;
        return Some(());
    }
    let (a, b) = (rng.random_range(2..=9), rng.random_range(3..=15));
    let (t, x, y) = [
        (
            "{name} buys {a} {packs} of {thing} with {b} {thing} in each {pack}",
            a,
            b,
        ),
        (
            "{name} has {a} {packs} of {thing}, and each {pack} holds {b}",
            a,
            b,
        ),
        ("There are {a} {packs} with {b} {thing} in each", a, b),
        ("{name} gets {b} {thing} a day for {a} days", b, a),
        ("{name} collects {b} {thing} every week for {a} weeks", b, a),
    ][rng.random_range(0..5)];
    let clause = story
        .fill(t)
        .replace("{a}", &a.to_string())
        .replace("{b}", &b.to_string());
    let unit = story.unit.clone();
    story.say(&clause, x, Op::Mul, y, &unit).map(|_| ())
}

/// The ending: compare with a second person, share out, reach a goal, or just ask.
fn ending(rng: &mut SmallRng, story: &mut Story) -> Option<String> {
    let v = story.value;
    let unit = story.unit.clone();
    match rng.random_range(0..5) {
        0 => {
            let k = rng.random_range(2..=20);
            let (t, op) = if rng.random_bool(0.5) {
                ("{other_name} has {k} more {thing} than {name}", Op::Add)
            } else {
                ("{other_name} has {k} fewer {thing} than {name}", Op::Sub)
            };
            let clause = story.fill(t).replace("{k}", &k.to_string());
            let w = story.say(&clause, v, op, k, &unit)?;
            let together = story.fill("{name} and {other_name} have them together");
            story.step(&together, v, Op::Add, w, &unit)?;
            Some(story.fill("How many {thing} do {name} and {other_name} have together?"))
        }
        1 => {
            let ks: Vec<i64> = (2..=8).filter(|k| v % k == 0 && v / k >= 2).collect();
            let k = *ks.get(rng.random_range(0..ks.len().max(1)))?;
            let clause = story
                .fill("{Pron} shares them equally among {k} friends")
                .replace("{k}", &k.to_string());
            story.say(&clause, v, Op::Div, k, &unit)?;
            Some(story.fill("How many {thing} does each friend get?"))
        }
        2 => {
            let goal = v + rng.random_range(3..=40);
            let clause = story
                .fill("{Pron} wants to have {goal} {thing}")
                .replace("{goal}", &goal.to_string());
            story.say(&clause, goal, Op::Sub, v, &format!("more {unit}"))?;
            Some(story.fill("How many more {thing} does {pron} need?"))
        }
        _ => Some(story.fill(
            [
                "How many {thing} does {name} have now?",
                "How many {thing} are left?",
                "How many {thing} does {name} end up with?",
            ][rng.random_range(0..3)],
        )),
    }
}

/// Shopping: items at a price each, maybe one more thing, paid with a bill or just added up.
fn shopping(rng: &mut SmallRng, story: &mut Story) -> Option<String> {
    let (a, b) = (rng.random_range(2..=8), rng.random_range(2..=12));
    let items = ITEMS[rng.random_range(0..ITEMS.len())];
    let clause = format!(
        "{} buys {a} {items} at {b} dollars each",
        story.fill("{name}")
    );
    let mut total = story.say(&clause, a, Op::Mul, b, "dollars")?;
    let bill = rng.random_bool(0.7);
    if !bill || rng.random_bool(0.5) {
        let c = rng.random_range(2..=15);
        let clause = story.fill(&format!("{{Pron}} also buys a bag for {c} dollars"));
        total = story.say(&clause, total, Op::Add, c, "dollars")?;
    }
    if bill {
        let bill = [20, 50, 100].into_iter().find(|&x| x > total)?;
        let clause = story.fill(&format!("{{Pron}} pays with a {bill} dollar bill"));
        story.say(&clause, bill, Op::Sub, total, "dollars")?;
        Some(story.fill("How much change does {pron} get?"))
    } else {
        Some(story.fill("How much does {pron} spend in all?"))
    }
}

/// A problem in everyday phrasing: (question, steps, answer), or `None` when the drawn numbers
/// don't work out (the caller draws again from the same generator).
pub(super) fn tell(rng: &mut SmallRng) -> Option<(String, Vec<Step>, i64)> {
    let (name, pron) = PEOPLE[rng.random_range(0..PEOPLE.len())];
    let other_name = loop {
        let (n, _) = PEOPLE[rng.random_range(0..PEOPLE.len())];
        if n != name {
            break n;
        }
    };
    let (thing, pack, packs) = THINGS[rng.random_range(0..THINGS.len())];
    let other = fill(OTHERS[rng.random_range(0..OTHERS.len())], &pronoun(pron));
    let mut vars = vec![
        ("{Other}", cap(&other)),
        ("{other_name}", other_name.into()),
        ("{other}", other),
        ("{name}", name.into()),
    ];
    vars.extend(pronoun(pron));
    vars.extend([
        ("{thing}", thing.into()),
        ("{packs}", packs.into()),
        ("{pack}", pack.into()),
    ]);
    let mut story = Story {
        vars,
        text: Vec::new(),
        steps: Vec::new(),
        value: 0,
        unit: thing.into(),
    };
    let ask = if rng.random_bool(0.2) {
        shopping(rng, &mut story)?
    } else {
        opening(rng, &mut story)?;
        // At least two steps in all: a plain opening is not one.
        let events = rng.random_range(2 - story.steps.len().min(1)..=3);
        let mut told = 0;
        while told < events {
            let Some((first, op, k)) = event(rng, &story) else {
                continue;
            };
            story.step(&first, story.value, op, k, thing)?;
            told += 1;
            // Sometimes a second event in the same sentence: "..., and then she buys 5 more."
            let joined = if told < events && rng.random_bool(0.4) {
                event(rng, &story)
            } else {
                None
            };
            match joined {
                Some((second, op, k)) => {
                    let second = lower_first(&second);
                    story.step(&format!("Then {second}"), story.value, op, k, thing)?;
                    told += 1;
                    // Told with or without the comma: a solution splits the sentence at
                    // "and then" either way, instead of quoting it whole.
                    let join = [", and then", " and then", ", then"][(k as usize + told) % 3];
                    story.text.push(format!("{first}{join} {second}."));
                }
                None => story.text.push(format!("{first}.")),
            }
        }
        ending(rng, &mut story)?
    };
    story.text.push(ask);
    Some((story.text.join(" "), story.steps, story.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn everyday_problems_quote_their_clauses_and_add_up() {
        let mut told = 0;
        let mut questions = std::collections::HashSet::new();
        for seed in 0..400 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let Some((question, steps, answer)) = tell(&mut rng) else {
                continue;
            };
            told += 1;
            assert!((2..=6).contains(&steps.len()), "{question}");
            for s in &steps {
                assert_eq!(s.op.apply(s.a, s.b), Some(s.result), "{}", s.sentence);
                let clause = s.sentence.split(", so ").next().unwrap();
                let quoted = clause.trim_start_matches("Then ").to_lowercase();
                assert!(
                    quoted.ends_with(" have them together")
                        || question.to_lowercase().contains(&quoted),
                    "{question} / {}",
                    s.sentence
                );
                assert!(!s.sentence.contains('{'), "{}", s.sentence);
            }
            assert_eq!(steps.last().unwrap().result, answer);
            assert!(
                !question.contains('{') && question.ends_with('?'),
                "{question}"
            );
            questions.insert(question);
        }
        assert!(told > 300, "most draws work out: {told}");
        assert!(
            questions.len() + 2 >= told,
            "varied: {} of {told} differ",
            questions.len()
        );
    }
}
