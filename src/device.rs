//! Device selection: parse `cpu`, `cuda`, `cuda:N` (and later `wgpu`) once, at the edge.
//!
//! Library code takes a `&candle_core::Device`; only the CLI and examples parse names.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A compute device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// candle on the CPU (the default).
    Cpu,
    /// candle on CUDA GPU `ordinal` (needs the `cuda` feature).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map(DeviceSpec::Cuda).map_err(|_| {
                    Error::invalid(format!(
                        "device `{other}`: the GPU ordinal after `cuda:` must be a number"
                    ))
                }),
                None => Err(Error::invalid(format!(
                    "device `{other}`: expected `cpu`, `cuda` or `cuda:N`"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the candle device. Asking for CUDA in a build without the `cuda` feature is an error
    /// that says how to rebuild, never a silent fall back to the CPU.
    pub fn open(self) -> Result<candle_core::Device> {
        match self {
            DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::invalid(format!(
                        "device `cuda:{n}`: this cromo was built without CUDA; rebuild with \
                         `cargo build --release --features cuda` (see the README)"
                    )));
                }
                Ok(candle_core::Device::new_cuda(n)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn cuda_without_feature_is_an_error_not_a_fallback() {
        if !candle_core::utils::cuda_is_available() {
            let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
