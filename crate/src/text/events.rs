//! The question's events in order. An answer that tells them one by one, quoting each before
//! its computation ("Then 12 more meters are added, so 34 + 12 = 46 meters."), must not skip
//! one: once it has told an event, a step that quotes a later event while an earlier one is
//! still undone, that quotes an event told already, or an answer stated while an event is
//! undone, skips the next event. What the step should have been is that event carried out on
//! the answer's latest result: its words quoted, then the latest result and the event's number
//! by each operation ([`skips`]); the aligner chooses among them.
//!
//! An event is a sentence of the question with a number. A sentence quotes one when what it
//! tells before its first equation holds four fifths of the event's words in their order (at
//! least three words). An event is done when a sentence of the answer quoted it, or when every
//! number it gives was computed with by a step that quoted no event of its own (each use of a
//! number does one event). It only speaks when the answer quotes: a reference written in its
//! own words, as GSM8K's are, is never read as skipping.
//!
//! A step that quotes an event of a rate and a count ("She gave 30 to each of her 3 cousins"), or
//! tells one in its own words, but computes with only one of them has left the other out
//! ([`leaves_out`]): what it should have done is the rate times the count, then that product
//! carried on.
//!
//! A step that quotes the next event but computes with the event's number twice ("The baker
//! scales the batch up 2 times, so 2 * 2 = 4 muffins" after 7 muffins) has lost the answer's
//! thread ([`repeats`]): what it should have done is the event on the latest result.
//!
//! Shared "with 3 friends" by one who keeps a share, or "between him and his 3 friends", is
//! shared by 4: a step that tells such a sharing and computes with the 3 should have divided by
//! the 4 ([`shares`]).
//!
//! "It sold 25 on Monday and twice as many on Tuesday" compares Tuesday with the 25, not with
//! the answer's running total: a step that multiplies its latest result instead ("so 95 * 2")
//! should have done the comparison first, then carried it on ([`compares`]).

use super::arithmetic::{
    Op, SHARING, cardinal, computations, equation_span, equations, format_number, numbers,
    operations, replace_equation, same, sharing_group, stated_answer,
};
use super::quantities::{RATE_WORDS, carried_on, fitting, rate_and_count};
use super::sentence_splitter::split_sentences;

struct Event<'a> {
    text: &'a str,
    words: Vec<String>,
    numbers: Vec<f64>,
}

/// A text's words, lowercase; a number is a word ("12", and "2.5" as "2" and "5").
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The sentences of the question that give a number, in order.
fn events(question: &str) -> Vec<Event<'_>> {
    split_sentences(question)
        .into_iter()
        .map(|text| Event {
            text: text.trim(),
            words: words(text),
            numbers: numbers(text),
        })
        .filter(|e| !e.numbers.is_empty())
        .collect()
}

/// The length of the longest common subsequence of two word lists.
fn common_words(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A sentence's words before its first equation (all of them when it has none): what it tells,
/// not what it computes ("Kevin has (16 + 5)/3 = 7 candy bars" tells "Kevin has").
fn told(sentence: &str) -> Vec<String> {
    words(told_text(sentence))
}

/// The text of what a sentence tells ([`told`]).
fn told_text(sentence: &str) -> &str {
    let Some(eq) = sentence.find('=') else {
        return sentence;
    };
    let expression = |c: char| c.is_ascii_digit() || " .,$()+-*/×÷x".contains(c);
    sentence[..eq].trim_end_matches(expression)
}

/// Whether a sentence (what it tells: [`told`]) quotes `event`: four fifths of its words, in
/// order.
fn quotes(sentence: &[String], event: &Event) -> bool {
    event.words.len() >= 3 && common_words(&event.words, sentence) * 5 >= event.words.len() * 4
}

/// The event a sentence quotes: the first it quotes that no earlier sentence quoted, else the
/// first it quotes (a question may give the same event twice).
fn quoting(events: &[Event], quoted: &[bool], sentence: &[String]) -> Option<usize> {
    let quotes_it = |e: &Event| quotes(sentence, e);
    (0..events.len())
        .find(|&i| !quoted[i] && quotes_it(&events[i]))
        .or_else(|| events.iter().position(quotes_it))
}

/// What the answer so far has done of the question's events.
struct Progress {
    /// Each event a sentence of the answer quoted.
    quoted: Vec<bool>,
    /// Each event done: quoted, or its numbers computed with by steps that quoted no event of
    /// theirs (each use of a number does one event, the earliest).
    done: Vec<bool>,
}

fn progress(events: &[Event], prefix: &str) -> Progress {
    let mut quoted = vec![false; events.len()];
    let mut used: Vec<f64> = Vec::new();
    for sentence in split_sentences(prefix) {
        let mut operands: Vec<f64> = computations(sentence)
            .into_iter()
            .flat_map(|(o, _)| o)
            .collect();
        if let Some(i) = quoting(events, &quoted, &told(sentence))
            && !quoted[i]
        {
            quoted[i] = true;
            // The event's own numbers are its step's: they do not also do another event.
            for &n in &events[i].numbers {
                if let Some(k) = operands.iter().position(|&o| same(o, n)) {
                    operands.remove(k);
                }
            }
        }
        used.extend(operands);
    }
    let mut done = quoted.clone();
    for (i, e) in events.iter().enumerate() {
        if done[i] {
            continue;
        }
        let mut left = used.clone();
        let all = e.numbers.iter().all(|&n| {
            let k = left.iter().position(|&u| same(u, n));
            k.map(|k| left.remove(k)).is_some()
        });
        if all {
            done[i] = true;
            used = left;
        }
    }
    Progress { quoted, done }
}

/// The word after the answer's latest result ("meters" of "34 + 12 = 46 meters."), if a word
/// follows it.
fn latest_unit(prefix: &str) -> Option<String> {
    let sentence = split_sentences(prefix)
        .into_iter()
        .rev()
        .find(|s| !equations(s).is_empty())?;
    let after = &sentence[sentence.rfind('=')? + 1..];
    let after = after
        .trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ',' || c == '$');
    let unit: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect();
    (!unit.is_empty()).then_some(unit)
}

/// The question's events and what a step tells: the event it quotes, else its own words before
/// its equation. None once the answer is stated: nothing after it is a step.
fn telling<'a>(
    question: &'a str,
    prefix: &str,
    sentence: &'a str,
) -> Option<(Vec<Event<'a>>, &'a str)> {
    if stated_answer(prefix).is_some() {
        return None;
    }
    let events = events(question);
    let Progress { quoted, .. } = progress(&events, prefix);
    let told_it = match quoting(&events, &quoted, &told(sentence)) {
        Some(j) => events[j].text,
        None => told_text(sentence),
    };
    Some((events, told_it))
}

/// What a step that skips the question's next event ([module docs](self)) should have been: that
/// event's words, then the answer's latest result and the event's number by each operation,
/// both ways round for a difference or a quotient ("The amount is multiplied by 2, so 34 * 2 =
/// 68 meters."), where the step then fits its quantities and checks out, a division comes out
/// whole and a subtraction not below zero. None for a step that skips nothing (or an answer
/// that neither quotes nor has computed anything yet); an empty list when nothing fits.
pub fn skips(question: &str, prefix: &str, sentence: &str) -> Option<Vec<String>> {
    let events = events(question);
    let Progress { quoted, done } = progress(&events, prefix);
    let next = done.iter().position(|d| !d)?;
    // The answer must have told an earlier event: one that goes straight to a later event
    // may have read the first as a premise ("Each box holds 24 crayons."), not a step.
    if !quoted[..next].contains(&true) || stated_answer(prefix).is_some() {
        return None;
    }
    let skipping = match quoting(&events, &quoted, &told(sentence)) {
        // A later event, or one told already.
        Some(j) => j > next || quoted[j],
        None => stated_answer(sentence).is_some(),
    };
    if !skipping {
        return None;
    }
    let &(_, latest) = equations(prefix).last()?;
    let event = &events[next];
    if event.text.ends_with('?') {
        return Some(Vec::new());
    }
    let narration = event.text.trim_end_matches(['.', '!']);
    let lead = &sentence[..sentence.len() - sentence.trim_start().len()];
    let unit = latest_unit(prefix)
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let steps = event.numbers.iter().flat_map(|&n| {
        carried_on(latest, n).filter_map(|(x, op, y)| {
            let value = op.eval(x, y)?;
            Some(format!(
                "{lead}{narration}, so {} {} {} = {}{unit}.",
                format_number(x),
                op.symbol(),
                format_number(y),
                format_number(value)
            ))
        })
    });
    Some(fitting(question, prefix, steps))
}

/// What a step that quotes an event of a rate and a count, or tells one in its own words before
/// its equation ("Her two brothers eat 4 slices each"), but computes with only one of them
/// should have done ("She gave 30 to each of her 3 cousins, so 150 - 30 = 120 stickers" leaves
/// out the 3): the rate times the count first, then that product carried on with the equation's
/// other number by each operation, both ways round for a difference or a quotient ("so 30 * 3
/// = 90, and 150 - 90 = 60 stickers"), where the step then fits its quantities and checks out,
/// the division comes out whole and the subtraction not below zero. None for a step that quotes
/// or tells no such event, uses both its numbers or neither, has no one-operation equation of
/// one of them with another number, or works per unit ("each", "per", "every" in the
/// equation's clause or after it); None too once the answer is stated; an empty list when
/// nothing fits.
pub fn leaves_out(question: &str, prefix: &str, sentence: &str) -> Option<Vec<String>> {
    let (_, told_it) = telling(question, prefix, sentence)?;
    let pair = rate_and_count(told_it)?;
    let of_event = |n: f64| pair.iter().any(|&e| same(e, n));
    let computed = computations(sentence);
    let used = |e: &f64| computed.iter().any(|(o, _)| o.iter().any(|&u| same(u, *e)));
    if pair.iter().filter(|e| used(e)).count() != 1 {
        return None;
    }
    // The equation that computes with one of the two and a number from elsewhere.
    let (k, (a, _, b, _)) = operations(sentence)
        .into_iter()
        .enumerate()
        .find(|&(_, (a, _, b, _))| of_event(a) != of_event(b))?;
    let other = if of_event(a) { b } else { a };
    // A step that works per unit ("25 - 3 = 22 students are present in each classroom", "so
    // each cousin has 12 + 30") needs no count: nothing is left out.
    let span = equation_span(sentence, k)?;
    let clause = sentence[..span.start]
        .rfind([',', ';'])
        .map_or(0, |i| i + 1);
    let per_unit = |text: &str| {
        words(text)
            .iter()
            .any(|w| RATE_WORDS.contains(&w.as_str()) || w == "apiece")
    };
    if per_unit(&sentence[clause..span.start]) || per_unit(&sentence[span.end..]) {
        return None;
    }
    let product = pair[0] * pair[1];
    let steps = carried_on(other, product).filter_map(|(x, op, y)| {
        let r = op.eval(x, y)?;
        let [m, n, p, x, y, r] = [pair[0], pair[1], product, x, y, r].map(format_number);
        let two = format!("{m} * {n} = {p}, and {x} {} {y} = {r}", op.symbol());
        replace_equation(sentence, k, &two)
    });
    Some(fitting(question, prefix, steps))
}

/// What a step that quotes the question's next event but computes with that event's only number
/// twice, not with the answer's latest result, should have been ("The baker scales the batch up
/// 2 times, so 2 * 2 = 4 muffins" after 7 muffins): the equation done on the latest result and
/// the event's number by each operation, both ways round for a difference or a quotient ("so 7 *
/// 2 = 14 muffins"), where the step then fits its quantities and checks out, a division comes
/// out whole and a subtraction not below zero. None for a step that quotes no event or not the
/// next, an event of more numbers than one, an answer with no result yet or stated already, a
/// latest result that is the event's number, or no equation of that number twice; an empty list
/// when nothing fits.
pub fn repeats(question: &str, prefix: &str, sentence: &str) -> Option<Vec<String>> {
    if stated_answer(prefix).is_some() {
        return None;
    }
    let events = events(question);
    let Progress { quoted, done } = progress(&events, prefix);
    let next = done.iter().position(|d| !d)?;
    if quoting(&events, &quoted, &told(sentence))? != next {
        return None;
    }
    let &[n] = &events[next].numbers[..] else {
        return None;
    };
    let &(_, latest) = equations(prefix).last()?;
    if same(latest, n) {
        return None;
    }
    let k = operations(sentence)
        .into_iter()
        .position(|(a, _, b, _)| same(a, n) && same(b, n))?;
    let steps = carried_on(latest, n).filter_map(|(x, op, y)| {
        let r = op.eval(x, y)?;
        let [x, y, r] = [x, y, r].map(format_number);
        replace_equation(sentence, k, &format!("{x} {} {y} = {r}", op.symbol()))
    });
    Some(fitting(question, prefix, steps))
}

/// What a step that tells a sharing by one who shares too ([`sharing_group`], the event it
/// quotes or in its own words, or shares out the others' number of such a sharing of the
/// question) but computes with the number of the others should have done:
/// divided by the whole group ("She splits the money equally with 3 friends and keeps one share,
/// so 16 * 3 = 48" as "so 16 / 4 = 4"), the equation's other number divided, or the answer's
/// latest result when the equation has none ("so 3 * 3 = 9"). None for a step that tells no such
/// sharing, an answer that has the group's number already (it counted "3 + 1 = 4 people") or is
/// stated, or no equation with the others' number; an empty list when the division does not
/// check out or fit, or has more than two decimals.
pub fn shares(question: &str, prefix: &str, sentence: &str) -> Option<Vec<String>> {
    let (events, told_it) = telling(question, prefix, sentence)?;
    // A step that shares out the others' number in fewer words ("shares the rest equally with
    // her 4 friends") tells the question's sharing of that number.
    let told_words = told(sentence);
    let names = |n: f64| {
        told_words.iter().any(|w| {
            w.parse()
                .ok()
                .or_else(|| cardinal(w))
                .is_some_and(|v| same(v, n))
        })
    };
    let (n, group) = sharing_group(told_it).or_else(|| {
        let sharing = told_words.iter().any(|w| SHARING.contains(&w.as_str()));
        sharing.then(|| {
            events
                .iter()
                .filter_map(|e| sharing_group(e.text))
                .find(|&(n, _)| names(n))
        })?
    })?;
    let counted = |text: &str| numbers(text).into_iter().any(|x| same(x, group));
    if counted(prefix) || counted(sentence) {
        return None;
    }
    let (k, (a, _, b, _)) = operations(sentence)
        .into_iter()
        .enumerate()
        .find(|&(_, (a, _, b, _))| same(a, n) || same(b, n))?;
    let x = if !same(a, n) {
        a
    } else if !same(b, n) {
        b
    } else {
        equations(prefix).last()?.1
    };
    let r = x / group;
    let step = ((r * 100.0).fract().abs() < 1e-9)
        .then(|| {
            let [x, g, r] = [x, group, r].map(format_number);
            replace_equation(sentence, k, &format!("{x} / {g} = {r}"))
        })
        .flatten();
    Some(fitting(question, prefix, step))
}

/// What a text compares and how: "It sold 25 on Monday and twice as many on Tuesday" is (25,
/// times 2), "half as many" (n, divided by 2), "3 times as many" (n, times 3); the multiplier
/// alone when the text gives no other number ("twice as many on Tuesday"). None without "as
/// many" or "as much", or with another count of numbers.
fn comparison(text: &str) -> Option<(Option<f64>, Op, f64)> {
    let w = words(text);
    if !w
        .windows(2)
        .any(|p| p[0] == "as" && (p[1] == "many" || p[1] == "much"))
    {
        return None;
    }
    let given = numbers(text);
    let times = w.windows(2).find_map(|p| {
        let k = p[0].parse::<f64>().ok().or_else(|| cardinal(&p[0]))?;
        (p[1] == "times").then_some(k)
    });
    let (op, m) = if let Some(k) = times {
        (Op::Mul, k)
    } else if w.iter().any(|x| x == "twice" || x == "double") {
        (Op::Mul, 2.0)
    } else if w.iter().any(|x| x == "half") {
        (Op::Div, 2.0)
    } else {
        return None;
    };
    let others: Vec<f64> = given.into_iter().filter(|&x| !same(x, m)).collect();
    match others[..] {
        [] => Some((None, op, m)),
        [n] => Some((Some(n), op, m)),
        _ => None,
    }
}

/// What a step that tells a comparison with an event's own number ([`comparison`], the event it
/// quotes or in its own words, "It sold twice as many on Tuesday" telling the question's "It sold
/// 25 on Monday and twice as many on Tuesday") but does it on the answer's latest result ("so 95
/// * 2 = 190 shirts") should have done: the comparison on the event's number first, then that
/// carried on with the latest result by each operation, both ways round for a difference or a
/// quotient ("so 25 * 2 = 50, and 95 - 50 = 45 shirts"), where the step then fits its quantities
/// and checks out. None for a step that tells no such comparison, an answer with no result yet
/// or stated already, a latest result that is the event's number, or no equation of the latest
/// result by the multiplier; an empty list when nothing fits.
pub fn compares(question: &str, prefix: &str, sentence: &str) -> Option<Vec<String>> {
    let (events, told_it) = telling(question, prefix, sentence)?;
    let (n, op, m) = match comparison(told_it)? {
        (Some(n), op, m) => (n, op, m),
        // The question's comparison by the same multiplier.
        (None, op, m) => events
            .iter()
            .filter_map(|e| comparison(e.text))
            .find_map(|(n, o, k)| (o == op && same(k, m)).then_some(n?))
            .map(|n| (n, op, m))?,
    };
    let &(_, latest) = equations(prefix).last()?;
    if same(latest, n) {
        return None;
    }
    let k = operations(sentence)
        .into_iter()
        .position(|(a, o, b, _)| o == op && same(a, latest) && same(b, m))?;
    let compared = op.eval(n, m)?;
    let steps = carried_on(latest, compared).filter_map(|(x, carry, y)| {
        let r = carry.eval(x, y)?;
        let [n, m, c, x, y, r] = [n, m, compared, x, y, r].map(format_number);
        let two = format!(
            "{n} {} {m} = {c}, and {x} {} {y} = {r}",
            op.symbol(),
            carry.symbol()
        );
        replace_equation(sentence, k, &two)
    });
    Some(fitting(question, prefix, steps))
}

#[cfg(test)]
mod tests {
    use super::{compares, leaves_out, repeats, shares, skips};

    const WORKER: &str = "A worker starts with 29 meters of work done. Then 5 more meters are \
        added. The amount is multiplied by 2. Then 12 more meters are added. What is the amount \
        in meters at the end?";
    const DONE_ONE: &str = "To solve this problem, we need to break it down step by step. Then 5 \
        more meters are added, so 29 + 5 = 34 meters.";

    #[test]
    fn a_step_that_quotes_a_later_event_is_offered_the_skipped_one() {
        let options = skips(
            WORKER,
            DONE_ONE,
            " Then 12 more meters are added, so 34 + 12 = 46 meters.",
        )
        .expect("it skips \"multiplied by 2\"");
        assert!(
            options.contains(&" The amount is multiplied by 2, so 34 * 2 = 68 meters.".into()),
            "{options:?}"
        );
        assert!(options.iter().all(|o| o.starts_with(" The amount")));
    }

    #[test]
    fn the_next_event_and_narration_skip_nothing() {
        let next = " The amount is multiplied by 2, so 34 * 2 = 68 meters.";
        assert_eq!(skips(WORKER, DONE_ONE, next), None);
        assert_eq!(skips(WORKER, DONE_ONE, " We keep going."), None);
        let all =
            format!("{DONE_ONE}{next} Then 12 more meters are added, so 68 + 12 = 80 meters.");
        assert_eq!(skips(WORKER, &all, " The answer is 80."), None, "all done");
    }

    #[test]
    fn an_early_answer_and_an_event_told_again_skip_the_next() {
        let early = skips(WORKER, DONE_ONE, " The answer is 34.").unwrap();
        assert!(early.contains(&" The amount is multiplied by 2, so 34 * 2 = 68 meters.".into()));
        let again = skips(
            WORKER,
            DONE_ONE,
            " Then 5 more meters are added, so 34 + 5 = 39 meters.",
        )
        .unwrap();
        assert!(again.contains(&" The amount is multiplied by 2, so 34 * 2 = 68 meters.".into()));
    }

    #[test]
    fn an_answer_in_its_own_words_is_never_read_as_skipping() {
        let q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many \
            clips in May. How many clips did Natalia sell altogether in April and May?";
        let prefix = "Natalia sold 48/2 = 24 clips in May.";
        assert_eq!(skips(q, prefix, " The answer is 24."), None);
    }

    #[test]
    fn a_question_giving_the_same_event_twice_needs_both() {
        let q = "A bakery bakes 19 muffins. An order arrives for 2 times that amount. An order \
            arrives for 2 times that amount. Customers buy 20 of them.";
        let prefix = "An order arrives for 2 times that amount, so 19 * 2 = 38 muffins.";
        assert_eq!(
            skips(
                q,
                prefix,
                " An order arrives for 2 times that amount, so 38 * 2 = 76 muffins."
            ),
            None,
            "the second order is the next event"
        );
        let options = skips(
            q,
            prefix,
            " Customers buy 20 of them, so 38 - 20 = 18 muffins.",
        )
        .expect("it skips the second order");
        assert!(options.contains(
            &" An order arrives for 2 times that amount, so 38 * 2 = 76 muffins.".into()
        ));
    }

    #[test]
    fn a_number_computed_with_does_one_event() {
        // The start's 17 is not also the 17 used up.
        let q = "A tank holds 17 liters of water. The amount is multiplied by 2. 17 liters are \
            used up. Then 12 more liters are added. How many liters are left in the end?";
        let prefix = "We go step by step. The amount is multiplied by 2, so 17 * 2 = 34 liters.";
        assert_eq!(
            skips(q, prefix, " 17 liters are used up, so 34 - 17 = 17 liters."),
            None
        );
        // An event whose number a stray step happened to use is not told already.
        let q = "Ben has 26 tokens in a wallet. He divides it into 2 equal envelopes and keeps \
            one. He receives 22 tokens as a gift.";
        let prefix = "Ben has 26 tokens in his wallet, and he has 2 * 2 = 4 tokens left.";
        let next = " He divides it into 2 equal envelopes and keeps one, so 26 / 2 = 13 tokens.";
        assert_eq!(skips(q, prefix, next), None);
    }

    #[test]
    fn an_event_before_any_told_is_a_premise_and_an_answer_stated_ends_it() {
        let q = "Each box holds 24 crayons. A teacher has 5 boxes and hands out 67 crayons. How \
            many crayons remain?";
        let prefix = "A teacher has 5 boxes and hands out 67 crayons, so 5 * 67 = 335 crayons.";
        assert_eq!(skips(q, prefix, " The answer is 335."), None);
        let stated = format!("{DONE_ONE} The answer is 34.");
        assert_eq!(
            skips(WORKER, &stated, " The amount is multiplied by 2."),
            None
        );
    }

    #[test]
    fn a_sentence_quotes_with_what_it_tells_not_what_it_computes() {
        // GSM8K's reference: "Kevin has (16 + 5)/3 = 7 candy bars" holds "has 16 candy bars"
        // only in its equation, and "Lena has 16 - 11 = 5 more candy bars" tells the question
        // nothing again.
        let q = "Lena has 16 candy bars. She needs 5 more candy bars to have 3 times as many as \
            Kevin, and Kevin has 4 candy bars less than Nicole. How many more candy bars does \
            Lena have than Nicole?";
        let prefix = "Kevin has (16 + 5)/3 = 7 candy bars. Nicole has 7 + 4 = 11 candy bars.";
        let last = " Lena has 16 - 11 = 5 more candy bars than Nicole.";
        assert_eq!(skips(q, prefix, last), None);
    }

    #[test]
    fn each_option_fits_its_quantities() {
        let q = "Sam starts with 16 apples. Then 8 apples are removed. They buy 3 more.";
        let prefix = "Sam starts with 16 apples, so 16 * 1 = 16 apples. They buy 3 more, so \
            16 + 3 = 19 apples.";
        // "removed" is a loss: no option adds it.
        let options = skips(q, prefix, " The answer is 19.").unwrap();
        assert!(!options.iter().any(|o| o.contains(" + ")), "{options:?}");
        assert!(options.contains(&" Then 8 apples are removed, so 19 - 8 = 11 apples.".into()));
    }

    const PRIYA: &str = "Priya had 150 stickers. She gave 30 to each of her 3 cousins. How many \
        stickers does she have left?";
    const LEFT_OUT: &str = " She gave 30 to each of her 3 cousins, so she has 150 - 30 = 120 \
        stickers left.";

    #[test]
    fn a_step_that_leaves_out_the_count_or_the_rate_it_quotes_is_offered_their_product() {
        let options = leaves_out(PRIYA, "", LEFT_OUT).expect("it leaves out the 3");
        assert!(
            options.contains(
                &" She gave 30 to each of her 3 cousins, so she has 30 * 3 = 90, and 150 - 90 = \
                60 stickers left."
                    .into()
            ),
            "{options:?}"
        );
        assert!(
            options
                .iter()
                .all(|o| o.contains("so she has 30 * 3 = 90, and 150 ")),
            "{options:?}"
        );
        let q = "Ben has 50 dollars. He buys 4 books at 6 dollars each. How much is left?";
        let step = " He buys 4 books at 6 dollars each, so 50 - 4 = 46 dollars.";
        let options = leaves_out(q, "Ben has 50 dollars.", step).unwrap();
        assert!(
            options.contains(
                &" He buys 4 books at 6 dollars each, so 4 * 6 = 24, and 50 - 24 = 26 dollars."
                    .into()
            ),
            "{options:?}"
        );
    }

    #[test]
    fn a_rate_and_a_count_told_in_its_own_words_count_too() {
        let q = "A pizza is cut into 12 slices. Mia eats 3 slices and her two brothers eat 4 \
            slices each. How many slices are left?";
        let prefix = "Mia eats 3 slices, so 12 - 3 = 9 slices.";
        let step = " Her two brothers eat 4 slices each, so 9 - 4 = 5 slices are left.";
        let options = leaves_out(q, prefix, step).expect("it leaves out the two brothers");
        assert!(
            options.contains(
                &" Her two brothers eat 4 slices each, so 2 * 4 = 8, and 9 - 8 = 1 slices are \
                left."
                    .into()
            ),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o.contains("9 + 8")),
            "eating is a loss"
        );
        let invented = " Her 3 brothers eat 4 slices each, so 9 - 4 = 5 slices are left.";
        assert_eq!(
            leaves_out(q, prefix, invented),
            Some(vec![]),
            "3 brothers from nowhere"
        );
    }

    #[test]
    fn a_step_that_uses_both_or_quotes_no_rate_and_count_leaves_nothing_out() {
        let both = " She gave 30 to each of her 3 cousins, so she gave 30 * 3 = 90 stickers.";
        assert_eq!(leaves_out(PRIYA, "", both), None);
        assert_eq!(
            leaves_out(PRIYA, "", " So 150 - 30 = 120."),
            None,
            "no quote"
        );
        let eggs = "A farmer collects 45 eggs. He puts them into boxes of 5 and sells 4 boxes.";
        let step = " He puts them into boxes of 5 and sells 4 boxes, so 45 - 4 = 41 boxes.";
        assert_eq!(leaves_out(eggs, "", step), None, "two counts");
        assert_eq!(
            leaves_out(PRIYA, "The answer is 120.", LEFT_OUT),
            None,
            "after the answer"
        );
        // Working per unit needs no count.
        let q = "There are 4 classrooms with 25 students in each classroom. 3 students are absent \
            from each classroom. How many students are present in each classroom?";
        let step = " There are 4 classrooms with 25 students in each classroom, and 3 are absent \
            from each, so 25 - 3 = 22 students are present in each classroom.";
        assert_eq!(leaves_out(q, "", step), None, "per classroom");
        let q = "Each of her 3 cousins had 12 stickers. She gave 30 to each of her 3 cousins.";
        let step = " She gave 30 to each of her 3 cousins, so each cousin has 12 + 30 = 42.";
        assert_eq!(leaves_out(q, "", step), None, "per cousin");
    }

    #[test]
    fn a_step_that_does_the_next_event_on_its_own_number_is_offered_the_latest_result() {
        let step = " The amount is multiplied by 2, so 2 * 2 = 4 meters.";
        let options = repeats(WORKER, DONE_ONE, step).expect("2 * 2 after 34");
        assert!(
            options.contains(&" The amount is multiplied by 2, so 34 * 2 = 68 meters.".into()),
            "{options:?}"
        );
        assert!(
            options
                .iter()
                .all(|o| o.starts_with(" The amount is multiplied by 2, so 34 ")),
            "{options:?}"
        );
        let q = "A bakery has 7 muffins. The baker scales the batch up 2 times. Then 5 more \
            muffins are baked.";
        let prefix = "A bakery has 7 muffins, so 7 * 1 = 7 muffins.";
        let options = repeats(
            q,
            prefix,
            " The baker scales the batch up 2 times, so 2 * 2 = 4 muffins.",
        )
        .unwrap();
        assert_eq!(
            options,
            [" The baker scales the batch up 2 times, so 7 * 2 = 14 muffins."],
            "\"2 times\" multiplies: nothing is added to a multiplier"
        );
    }

    #[test]
    fn a_step_on_the_latest_result_or_in_its_own_words_repeats_nothing() {
        let right = " The amount is multiplied by 2, so 34 * 2 = 68 meters.";
        assert_eq!(repeats(WORKER, DONE_ONE, right), None);
        assert_eq!(
            repeats(WORKER, DONE_ONE, " So 2 * 2 = 4 meters."),
            None,
            "no quote"
        );
        assert_eq!(
            repeats(
                WORKER,
                "",
                " Then 5 more meters are added, so 5 + 5 = 10 meters."
            ),
            None,
            "no result yet"
        );
        assert_eq!(
            repeats(
                WORKER,
                DONE_ONE,
                " Then 12 more meters are added, so 12 + 12 = 24 meters."
            ),
            None,
            "not the next event: skips speaks for it"
        );
        let q = "A box holds 4 rows of 4 pens. Then 2 pens are added.";
        let prefix = "We start. Then 2 pens are added, so 1 + 2 = 3 pens.";
        assert_eq!(
            repeats(
                q,
                prefix,
                " A box holds 4 rows of 4 pens, so 4 * 4 = 16 pens."
            ),
            None,
            "an event of two numbers"
        );
        let q = "Sam has 2 apples. He buys 2 more apples. How many apples?";
        let prefix = "Sam has 2 apples, so 2 * 1 = 2 apples.";
        assert_eq!(
            repeats(q, prefix, " He buys 2 more apples, so 2 + 2 = 4 apples."),
            None,
            "the latest result is the event's number"
        );
    }

    #[test]
    fn sharing_with_others_and_oneself_divides_by_the_whole_group() {
        let q = "Hana has 22 tokens in a wallet. She pays 6 tokens for a ticket. She splits the \
            money equally with 3 friends and keeps one share. How many tokens does Hana have?";
        let prefix = "She pays 6 tokens for a ticket, so 22 - 6 = 16 tokens.";
        let step = " She splits the money equally with 3 friends and keeps one share, so 16 * 3 = \
            48 tokens.";
        assert_eq!(
            shares(q, prefix, step).unwrap(),
            [
                " She splits the money equally with 3 friends and keeps one share, so 16 / 4 = 4 \
                tokens."
            ]
        );
        let step = " She splits the money equally with 3 friends and keeps one share, so 3 * 3 = \
            9 tokens.";
        assert_eq!(
            shares(q, prefix, step).unwrap(),
            [
                " She splits the money equally with 3 friends and keeps one share, so 16 / 4 = 4 \
                tokens."
            ],
            "the others' number twice: the latest result shared"
        );
        let q = "Hana picks 36 strawberries. She eats 6 and shares the rest equally with her 4 \
            friends and herself. How many strawberries does each person get?";
        let prefix = "She eats 6, so 36 - 6 = 30 strawberries.";
        let step = " Then, she shares the rest equally with her 4 friends, so 30 / 4 = 7.5 \
            strawberries.";
        assert_eq!(
            shares(q, prefix, step).unwrap(),
            [" Then, she shares the rest equally with her 4 friends, so 30 / 5 = 6 strawberries."],
            "the event quoted"
        );
        let q = "Tom and his 2 brothers split 45 dollars equally. How much does each get?";
        let step = "Tom and his 2 brothers split 45 dollars equally, so 45 / 2 = 22.5 dollars.";
        assert_eq!(
            shares(q, "", step).unwrap(),
            ["Tom and his 2 brothers split 45 dollars equally, so 45 / 3 = 15 dollars."]
        );
    }

    #[test]
    fn a_group_counted_or_a_sharing_among_others_alone_is_left_alone() {
        let q = "Hana picks 36 strawberries. She shares them equally with her 3 friends and \
            herself. How many does each person get?";
        let counted = "There are 3 + 1 = 4 people.";
        assert_eq!(shares(q, "", counted), None, "the group counted");
        let prefix = "There are 3 + 1 = 4 people.";
        assert_eq!(shares(q, prefix, " So 36 / 4 = 9 each."), None);
        let q = "Hana picks 36 strawberries. She gives them equally to her 4 friends. How many \
            does each friend get?";
        let step = "She gives them equally to her 4 friends, so 36 / 4 = 9 strawberries.";
        assert_eq!(shares(q, "", step), None, "she keeps none");
        let q = "Jo splits 40 dollars equally with 3 friends and keeps one share.";
        let step = "Jo splits 40 dollars equally with 3 friends and keeps one share, so 40 / 4 = \
            10 dollars.";
        assert_eq!(shares(q, "", step), None, "divided by the group");
        let q = "She and her 3 friends each have 5 apples. How many apples do they have?";
        let step = "She and her 3 friends each have 5 apples, so 3 * 5 = 15 apples.";
        assert_eq!(shares(q, "", step), None, "no sharing");
    }

    #[test]
    fn a_comparison_with_an_events_number_is_done_on_it_not_on_the_total() {
        let q = "A store had 120 shirts. It sold 25 on Monday and twice as many on Tuesday. How \
            many shirts are left?";
        let prefix = "It sold 25 on Monday, so 120 - 25 = 95 shirts.";
        let step = " It sold twice as many on Tuesday, so 95 * 2 = 190 shirts.";
        let options = compares(q, prefix, step).expect("twice the 25, not the 95");
        assert!(
            options.contains(
                &" It sold twice as many on Tuesday, so 25 * 2 = 50, and 95 - 50 = \
                45 shirts."
                    .into()
            ),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o.contains("95 + 50")),
            "selling is a loss: {options:?}"
        );
        let q = "Maya read 45 pages on Saturday and 3 times as many pages on Sunday.";
        let prefix = "She read 45 pages, so 45 * 1 = 45 pages. Then 10 + 45 = 55 pages.";
        let step = " Maya read 3 times as many pages on Sunday, so 55 * 3 = 165 pages.";
        assert!(
            compares(q, prefix, step).unwrap().contains(
                &" Maya read 3 times as many pages on Sunday, so 45 * 3 = 135, and 55 \
                    + 135 = 190 pages."
                    .into()
            )
        );
    }

    #[test]
    fn a_comparison_done_on_its_number_or_on_a_total_that_is_it_is_left_alone() {
        let q = "A store had 120 shirts. It sold 25 on Monday and twice as many on Tuesday.";
        let prefix = "It sold 25 on Monday, so 120 - 25 = 95 shirts.";
        let right = " It sold twice as many on Tuesday, so 25 * 2 = 50 shirts.";
        assert_eq!(compares(q, prefix, right), None);
        let prefix = "On Monday it sold 20 + 5 = 25 shirts.";
        let step = " It sold twice as many on Tuesday, so 25 * 2 = 50 shirts.";
        assert_eq!(
            compares(q, prefix, step),
            None,
            "the latest result is the 25"
        );
        assert_eq!(
            compares(q, "", " It sold twice as many on Tuesday, so 95 * 2 = 190."),
            None,
            "no result yet"
        );
        let q = "Sam has 18 marbles. His friend gives him 3 more.";
        let prefix = "Sam has 18 + 3 = 21 marbles.";
        assert_eq!(
            compares(q, prefix, " So 21 * 2 = 42."),
            None,
            "no comparison"
        );
    }
}
