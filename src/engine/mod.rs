//! The inference engine: devices, model sources (GGUF file, Hugging Face folder or hub id),
//! tokenizers, one llama-family transformer, the precision ladder and the next-token
//! distributions the study samples from.

pub mod batch;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod convert;
pub mod device;
pub mod digest;
pub mod download;
pub mod fetch;
pub mod fused;
pub mod gguf;
pub mod hf;
pub mod hub;
pub mod matrix;
pub mod mlx;
pub mod model;
pub mod packed;
pub mod perplexity;
pub mod quant;
pub mod safetensors;
pub mod sample;
pub mod source;
pub mod source_model;
pub mod stack;
pub mod synthetic;
pub mod tokenizer;

pub use cache::KvCache;
pub use device::select_device;
pub use model::{ModelConfig, RopeStyle, Transformer};
pub use quant::{Compute, Precision, Scheme};
pub use source::{ModelSpec, SourceModel, resolve_model};
