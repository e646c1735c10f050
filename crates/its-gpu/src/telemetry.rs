//! GPU telemetry from NVML (utilisation, memory, temperature, power, clocks), for worker
//! status and metrics. NVML (`libnvidia-ml.so.1`) is loaded at run time, once per process; where
//! it is missing every sample is `None` and one log line says why. A CUDA ordinal is matched to
//! its NVML device by PCI address, so `CUDA_VISIBLE_DEVICES` reordering does not mix GPUs up.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use cudarc::driver::sys::CUdevice_attribute;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};

use crate::GpuContext;

/// One reading of one GPU; a field NVML does not report on this device is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuSample {
    /// Share of the last sample period with a kernel running, 0..1.
    pub utilisation: Option<f32>,
    /// Device memory in use, bytes.
    pub memory_used_bytes: Option<u64>,
    /// Device memory installed, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Core temperature, degrees Celsius.
    pub temperature_c: Option<f32>,
    /// Board power draw, watts.
    pub power_w: Option<f32>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub memory_clock_mhz: Option<u32>,
}

fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| {
        match catch_unwind(Nvml::init) {
            Ok(Ok(n)) => Some(n),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "NVML unavailable: no GPU telemetry (utilisation, power, temperature)");
                None
            }
            Err(_) => {
                tracing::warn!("NVML panicked while loading: no GPU telemetry");
                None
            }
        }
    })
    .as_ref()
}

/// Reads GPU telemetry for one CUDA device. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GpuTelemetry {
    pci_bus_id: Option<String>,
    ordinal: u32,
}

impl GpuTelemetry {
    /// The telemetry source of `gpu` (CUDA ordinal `ordinal`).
    pub fn new(gpu: &GpuContext, ordinal: u32) -> Self {
        let a = |attr| gpu.cuda().attribute(attr).ok();
        let pci_bus_id = match (
            a(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
            a(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
            a(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
        ) {
            (Some(d), Some(b), Some(dev)) => Some(format!("{d:08x}:{b:02x}:{dev:02x}.0")),
            _ => None,
        };
        Self {
            pci_bus_id,
            ordinal,
        }
    }

    /// A reading now; `None` when NVML is not loaded or does not know the device.
    pub fn sample(&self) -> Option<GpuSample> {
        let nvml = nvml()?;
        catch_unwind(AssertUnwindSafe(|| {
            let device = match &self.pci_bus_id {
                Some(id) => nvml
                    .device_by_pci_bus_id(id.as_str())
                    .or_else(|_| nvml.device_by_index(self.ordinal)),
                None => nvml.device_by_index(self.ordinal),
            }
            .ok()?;
            let memory = device.memory_info().ok();
            Some(GpuSample {
                utilisation: device
                    .utilization_rates()
                    .ok()
                    .map(|u| u.gpu as f32 / 100.0),
                memory_used_bytes: memory.as_ref().map(|m| m.used),
                memory_total_bytes: memory.as_ref().map(|m| m.total),
                temperature_c: device
                    .temperature(TemperatureSensor::Gpu)
                    .ok()
                    .map(|t| t as f32),
                power_w: device.power_usage().ok().map(|mw| mw as f32 / 1000.0),
                sm_clock_mhz: device.clock_info(Clock::SM).ok(),
                memory_clock_mhz: device.clock_info(Clock::Memory).ok(),
            })
        }))
        .ok()
        .flatten()
    }
}
