//! The chat template from the GGUF (`tokenizer.chat_template`), rendered with minijinja.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::gguf::Gguf;

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn user(content: &str) -> Self {
        Self::new("user", content)
    }
}

#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

/// ChatML: what a model without a template of its own gets.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

impl ChatTemplate {
    pub fn new(source: &str) -> Result<Self> {
        let t = Self {
            source: source.to_string(),
            bos: String::new(),
            eos: String::new(),
        };
        t.render(&[Message::user("check")], true)?;
        Ok(t)
    }

    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let source = g.get_str("tokenizer.chat_template").unwrap_or(CHATML);
        let token = |k: &str| -> String {
            let tokens = g.get_array("tokenizer.ggml.tokens").ok();
            g.get_u64(k)
                .ok()
                .and_then(|i| tokens?.get(i as usize)?.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let mut t = Self::new(source)?;
        t.bos = token("tokenizer.ggml.bos_token_id");
        t.eos = token("tokenizer.ggml.eos_token_id");
        Ok(t)
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let tmpl = env
            .template_from_str(&self.source)
            .map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| Error::Template(e.to_string()))
    }

    /// The prompt that makes the model continue an assistant answer already begun with `prefix`.
    pub fn continuation(&self, messages: &[Message], prefix: &str) -> Result<String> {
        Ok(self.render(messages, true)? + prefix)
    }
}
