//! The engine: model, tokenizer and chat template from one GGUF (decoding is in decoder.rs).

use crate::error::{Error, Result};
use crate::model::{EngineDevice, Gguf, Llama};
use crate::text::{ChatTemplate, Message, Tokenizer};

#[derive(Debug, Clone)]
pub struct Engine {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

impl Engine {
    pub fn from_gguf(g: &Gguf, device: &EngineDevice) -> Result<Self> {
        let model = Llama::from_gguf(g, device)?;
        let tokenizer = Tokenizer::from_gguf(g)?;
        if tokenizer.vocab_size() > model.config.vocab {
            return Err(Error::Config(format!(
                "tokenizer has {} tokens, the model {}",
                tokenizer.vocab_size(),
                model.config.vocab
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            template: ChatTemplate::from_gguf(g)?,
        })
    }

    pub fn from_bytes(bytes: Vec<u8>, device: &EngineDevice) -> Result<Self> {
        Self::from_gguf(&Gguf::parse(bytes)?, device)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &std::path::Path, device: &EngineDevice) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?, device)
    }

    /// The same base with a LoRA adapter applied: the weights are shared, not copied.
    pub fn with_adapter(&self, adapter: crate::model::Adapter) -> Result<Self> {
        Ok(Self {
            model: self.model.with_adapter(adapter)?,
            ..self.clone()
        })
    }

    /// Reads a safetensors adapter made for this engine's base and applies it.
    pub fn with_adapter_bytes(&self, bytes: &[u8]) -> Result<Self> {
        let adapter = crate::model::Adapter::from_safetensors(
            bytes,
            &self.model.config,
            &self.model.device.device,
        )?;
        self.with_adapter(adapter)
    }

    /// The token ids of a chat prompt (template applied, generation prompt added).
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        if messages.iter().all(|m| m.content.trim().is_empty()) {
            return Err(Error::EmptyInput("the prompt is empty"));
        }
        self.tokenizer
            .encode(&self.template.render(messages, true)?)
    }
}
