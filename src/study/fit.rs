//! Whether every item fits the model: its prompt, in every option order, plus the answer
//! tokens a seed may decode after it, must lie within the model's positions. Checked once
//! a model's tokenizer and config are known, before it scores anything, so an over-long item
//! is named at the start of a run instead of failing it part-way. With `--skip-bad` the
//! planning step leaves such items out (listed in the manifest with the malformed lines).

use super::{PlannedModel, StudySpec, load_for_scoring};
use crate::bbq::{Item, Selection};
use crate::engine::source::SourceModel;
use crate::error::{Error, Result};
use crate::prompt::{self, ChatTemplate};

/// The most positions an item uses: its prompt, then up to `MAX_NEW_TOKENS - 1` decoded
/// tokens fed back (the last one sampled is never fed).
pub fn positions_needed(prompt_tokens: usize) -> usize {
    prompt_tokens + prompt::MAX_NEW_TOKENS - 1
}

/// An item that does not fit: its longest prompt over the option orders, in tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlong {
    pub category: String,
    pub example_id: i64,
    pub prompt_tokens: usize,
}

impl std::fmt::Display for Overlong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} ({} prompt tokens)",
            self.category, self.example_id, self.prompt_tokens
        )
    }
}

/// The items of `items` whose prompt (in any of the spec's option orders) does not fit
/// `src`'s positions, in item order.
pub fn overlong_items(
    spec: &StudySpec,
    items: &[Item],
    src: &SourceModel,
    template: &ChatTemplate,
) -> Result<Vec<Overlong>> {
    let longest = longest_prompts(spec, items, src, template)?;
    Ok(overlong_of(items, &longest, src.cfg.max_positions))
}

/// Each item's longest prompt over the spec's option orders, in tokens.
fn longest_prompts(
    spec: &StudySpec,
    items: &[Item],
    src: &SourceModel,
    template: &ChatTemplate,
) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut longest = 0;
        for order in &spec.option_orders {
            let text = spec.protocol.prompt(template, &order.shown(item))?;
            longest = longest.max(src.tok.encode(&text)?.len());
        }
        out.push(longest);
    }
    Ok(out)
}

/// The items whose longest prompt (`longest`, in item order) needs more than `max` positions.
fn overlong_of(items: &[Item], longest: &[usize], max: usize) -> Vec<Overlong> {
    items
        .iter()
        .zip(longest)
        .filter(|(_, n)| positions_needed(**n) > max)
        .map(|(item, &n)| Overlong {
            category: item.category.clone(),
            example_id: item.example_id,
            prompt_tokens: n,
        })
        .collect()
}

/// The most positions an item of `items` needs (its prompt and the fed-back answer
/// tokens); an error naming the items that do not fit (the first ten, and how many in all).
pub fn check_fit(
    spec: &StudySpec,
    items: &[Item],
    model_id: &str,
    src: &SourceModel,
    template: &ChatTemplate,
) -> Result<usize> {
    let longest = longest_prompts(spec, items, src, template)?;
    let bad = overlong_of(items, &longest, src.cfg.max_positions);
    if bad.is_empty() {
        return Ok(positions_needed(longest.iter().copied().max().unwrap_or(0)));
    }
    let shown: Vec<String> = bad.iter().take(10).map(|o| o.to_string()).collect();
    let more = match bad.len() > shown.len() {
        true => format!(" and {} more", bad.len() - shown.len()),
        false => String::new(),
    };
    Err(Error::Input(format!(
        "{} item(s) do not fit {model_id}'s {} positions (prompt plus {} answer tokens): {}{more}; nothing was scored. --skip-bad leaves them out",
        bad.len(),
        src.cfg.max_positions,
        prompt::MAX_NEW_TOKENS - 1,
        shown.join(", ")
    )))
}

/// `--skip-bad`: load each model's tokenizer and config (the source, as scoring loads it)
/// and leave out of `sel` every item that does not fit one of them, adding a line per item
/// to `sel.skipped`. How many items were left out.
pub fn skip_overlong(
    spec: &StudySpec,
    models: &[PlannedModel],
    sel: &mut Selection,
) -> Result<usize> {
    let before = sel.items.len();
    for m in models {
        let chat_template = spec.protocol.chat_template.as_deref();
        let (src, template, _) = load_for_scoring(&m.resolved, chat_template)?;
        let bad = overlong_items(spec, &sel.items, &src, &template)?;
        for o in &bad {
            sel.skipped.push(format!(
                "{o}: does not fit {}'s {} positions",
                m.resolved.id, src.cfg.max_positions
            ));
        }
        sel.items.retain(|i| {
            !bad.iter()
                .any(|o| o.category == i.category && o.example_id == i.example_id)
        });
    }
    Ok(before - sel.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_needs_its_prompt_and_the_fed_back_answer_tokens() {
        assert_eq!(positions_needed(10), 10 + prompt::MAX_NEW_TOKENS - 1);
        let o = Overlong {
            category: "Age".into(),
            example_id: 17,
            prompt_tokens: 900,
        };
        assert_eq!(o.to_string(), "Age:17 (900 prompt tokens)");
    }
}
