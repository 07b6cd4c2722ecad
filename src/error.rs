//! The crate's error type. Every variant carries a message that names what was wrong and
//! where (file, line, item, tensor), so the binary can print it as it is and exit with 2.

/// An error of stereoscope, with a message meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input: flags, BBQ files, folders.
    #[error("{0}")]
    Input(String),
    /// A model that cannot be found, read or run.
    #[error("{0}")]
    Model(String),
    /// The results folder cannot be read or written.
    #[error("{0}")]
    Store(String),
    /// The run was cancelled; what finished is on disk.
    #[error("cancelled")]
    Cancelled,
    /// A tensor operation failed.
    #[error("model computation failed: {}", brief(.0))]
    Candle(candle_core::Error),
    /// The device has no memory left for the work in flight: `message` says what to change
    /// (see [`out_of_memory`]); `device` is the device's own words.
    #[error("{message}")]
    OutOfMemory { message: String, device: String },
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Error {
        let msg = brief(&e);
        if is_out_of_memory(&msg) {
            Error::OutOfMemory {
                message: format!(
                    "the device ran out of memory ({msg}): lower --batch-size (or --ppl-seq-len in the perplexity stage); a study's finished parts are kept and the same command resumes"
                ),
                device: msg,
            }
        } else {
            Error::Candle(e)
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is set.
pub fn brief(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => brief(inner),
        other => other.to_string(),
    }
}

/// Whether a device error's text says the device ran out of memory: CUDA's
/// `CUDA_ERROR_OUT_OF_MEMORY` (cudarc's `DriverError`, as candle passes it on), cuBLAS's
/// `CUBLAS_STATUS_ALLOC_FAILED`, Metal's failed buffer allocation or out-of-memory command
/// buffer, or any "out of memory".
pub fn is_out_of_memory(text: &str) -> bool {
    let lower = text.to_lowercase();
    [
        "out_of_memory",
        "out of memory",
        "outofmemory",
        "alloc_failed",
    ]
    .iter()
    .any(|p| lower.contains(p))
        || lower.contains("insufficient memory")
        || text.contains("Failed to create metal resource: Buffer")
}

/// What the run was doing on the device when it ran out of memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeviceWork {
    /// Scoring part `part` (its index, as in `part-NNNNN.parquet`) `batch_size` prompts
    /// per forward pass.
    Scoring { part: usize, batch_size: usize },
    /// Building the precision: its weights going onto the device.
    Building,
    /// Measuring perplexity over sequences of `seq_len` tokens (BF16 held beside the
    /// precision as its reference).
    Perplexity { seq_len: usize },
}

/// Where a study ran out of device memory: the device's name, the model and precision, the
/// results folder and the work in flight.
pub struct MemoryContext<'a> {
    pub device: &'a str,
    pub model: &'a str,
    pub precision: &'a str,
    pub out: &'a std::path::Path,
    pub work: DeviceWork,
}

/// `e` as the one message that says what to do when it is the device running out of memory
/// (an [`Error::OutOfMemory`], or another error whose text says so); any other error as it is.
pub fn out_of_memory(e: Error, at: &MemoryContext) -> Error {
    let device_text = match &e {
        Error::OutOfMemory { device, .. } => device.clone(),
        Error::Candle(c) if is_out_of_memory(&brief(c)) => brief(c),
        Error::Model(m) if is_out_of_memory(m) => m.clone(),
        _ => return e,
    };
    let (dev, out) = (at.device, at.out.display());
    let label = format!("{} {}", at.model, at.precision);
    let message = match at.work {
        DeviceWork::Scoring { part, batch_size } if batch_size > 1 => format!(
            "{dev} ran out of memory scoring {label} part {part} at batch size {batch_size}: finished parts are kept in {out}; rerun the same command with --batch-size {} to resume (the device said: {device_text})",
            batch_size / 2
        ),
        DeviceWork::Scoring { part, .. } => format!(
            "{dev} ran out of memory scoring {label} part {part} at batch size 1, the smallest: finished parts are kept in {out}; free memory on {dev} (other programs using it), then rerun the same command to resume (the device said: {device_text})"
        ),
        DeviceWork::Perplexity { seq_len } => format!(
            "{dev} ran out of memory measuring the perplexity of {label} over sequences of {seq_len} tokens (BF16 is held beside it as the reference): its records are kept in {out}; rerun the same command with a smaller --ppl-seq-len, or with --ppl-sequences 0 to skip perplexity, to finish (the device said: {device_text})"
        ),
        DeviceWork::Building => format!(
            "{dev} ran out of memory building {label} (its weights do not fit): finished parts are kept in {out}; free memory on {dev} (other programs using it), then rerun the same command to resume (the device said: {device_text})"
        ),
    };
    Error::OutOfMemory {
        message,
        device: device_text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text candle gives for CUDA running out of memory: cudarc's `DriverError`.
    #[derive(Debug)]
    struct DriverOom;
    impl std::fmt::Display for DriverOom {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
            )
        }
    }
    impl std::error::Error for DriverOom {}

    fn at(work: DeviceWork) -> MemoryContext<'static> {
        MemoryContext {
            device: "cuda:0",
            model: "qwen",
            precision: "bf16",
            out: std::path::Path::new("/r/out"),
            work,
        }
    }

    #[test]
    fn device_errors_that_say_out_of_memory_are_recognised_and_others_are_not() {
        for t in [
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "CUBLAS_STATUS_ALLOC_FAILED",
            "Metal error Failed to create metal resource: Buffer",
            "Metal error Command buffer had following error: Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)",
        ] {
            assert!(is_out_of_memory(t), "{t}");
        }
        for t in [
            "DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")",
            "shape mismatch in matmul",
            "Metal error Failed to create metal resource: CommandQueue",
        ] {
            assert!(!is_out_of_memory(t), "{t}");
        }
    }

    #[test]
    fn candles_cuda_out_of_memory_becomes_one_message_naming_the_batch_size() {
        let e: Error = candle_core::Error::Cuda(Box::new(DriverOom)).bt().into();
        assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
        let scoring = DeviceWork::Scoring {
            part: 3,
            batch_size: 128,
        };
        assert_eq!(
            out_of_memory(e, &at(scoring)).to_string(),
            "cuda:0 ran out of memory scoring qwen bf16 part 3 at batch size 128: finished parts are kept in /r/out; rerun the same command with --batch-size 64 to resume (the device said: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\"))"
        );
        let one = DeviceWork::Scoring {
            part: 0,
            batch_size: 1,
        };
        let e = out_of_memory(
            Error::Candle(candle_core::Error::Cuda(Box::new(DriverOom))),
            &at(one),
        );
        let text = e.to_string();
        assert!(
            text.contains("at batch size 1, the smallest") && !text.contains("--batch-size 0"),
            "{text}"
        );
        let text = out_of_memory(
            Error::Model("upload: out of memory".into()),
            &at(DeviceWork::Building),
        )
        .to_string();
        assert!(
            text.starts_with("cuda:0 ran out of memory building qwen bf16"),
            "{text}"
        );
        let text = out_of_memory(
            Error::Candle(candle_core::Error::Cuda(Box::new(DriverOom))),
            &at(DeviceWork::Perplexity { seq_len: 512 }),
        )
        .to_string();
        assert!(
            text.starts_with(
                "cuda:0 ran out of memory measuring the perplexity of qwen bf16 over sequences of 512 tokens"
            ) && text.contains("--ppl-seq-len")
                && text.contains("--ppl-sequences 0"),
            "{text}"
        );
    }

    #[test]
    fn other_errors_pass_unchanged() {
        let e = Error::Candle(candle_core::Error::Msg("shape mismatch".into()));
        let scoring = DeviceWork::Scoring {
            part: 0,
            batch_size: 8,
        };
        let out = out_of_memory(e, &at(scoring));
        assert!(matches!(out, Error::Candle(_)), "{out:?}");
        assert!(matches!(
            out_of_memory(Error::Cancelled, &at(scoring)),
            Error::Cancelled
        ));
    }
}
