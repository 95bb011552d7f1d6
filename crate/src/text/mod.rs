//! Text: the tokenizer and chat template from the GGUF, streaming detokenization, the
//! calculator that decoding may consult, the arithmetic it and the training oracles read, and
//! what a question's quantities allow a step to do with them, and the question's events an
//! answer that quotes them must not skip.

pub mod arithmetic;
pub mod calculator;
pub mod chat_template;
pub mod events;
pub mod quantities;
pub mod sentence_splitter;
pub mod stream_decoder;
pub mod tokenizer;

pub use calculator::Calculator;
pub use chat_template::{ChatTemplate, Message};
pub use sentence_splitter::{
    SentenceSplitter, complete_sentences, first_sentence_end, split_sentences,
};
pub use stream_decoder::StreamDecoder;
pub use tokenizer::Tokenizer;
