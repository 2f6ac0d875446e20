//! Built-in capacities of common EC2 instance types, so the planner needs no EC2 API call.
//!
//! Deliberately a small table instead of `DescribeInstanceTypes`: the aws-sdk-ec2 crate alone takes
//! longer to compile than the rest of the workspace on a 2-core CI machine, and an instance type's
//! vCPU and memory never change. Types not listed here are given in the configuration
//! (`node_groups.instance_types` or a group's `allocatable`). Figures are AWS's published
//! vCPU and memory (GiB) per size.

use crate::quantity::{Cpu, Memory};

/// vCPU and memory of one instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceCapacity {
    /// vCPUs.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
}

/// Families in the table and their memory per vCPU (GiB): r = 8, m = 4, c = 2. The `d` variants
/// (local NVMe instance store, which the segment-cache sidecar uses) have the same CPU and memory.
const FAMILIES: &[(&str, u64, &[&str])] = &[
    ("r6i", 8, SIZES_6I),
    ("r6id", 8, SIZES_6I),
    ("r7i", 8, SIZES_7I),
    ("m6i", 4, SIZES_6I),
    ("m6id", 4, SIZES_6I),
    ("m7i", 4, SIZES_7I),
    ("c6i", 2, SIZES_6I),
    ("c6id", 2, SIZES_6I),
    ("c7i", 2, SIZES_7I),
];

const SIZES_6I: &[&str] = &[
    "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
    "32xlarge",
];
const SIZES_7I: &[&str] = &[
    "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
    "48xlarge",
];

fn vcpus(size: &str) -> Option<u64> {
    match size {
        "large" => Some(2),
        "xlarge" => Some(4),
        _ => size
            .strip_suffix("xlarge")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n * 4),
    }
}

/// The instance families in the built-in table (`r6i`, `m7i`...), for messages.
pub fn families() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().map(|(family, _, _)| *family)
}

/// Capacity of `instance_type` from the built-in table, or `None` if it is not listed.
pub fn builtin(instance_type: &str) -> Option<InstanceCapacity> {
    let (family, size) = instance_type.split_once('.')?;
    let (_, gib_per_vcpu, sizes) = FAMILIES.iter().find(|(f, _, _)| *f == family)?;
    if !sizes.contains(&size) {
        return None;
    }
    let v = vcpus(size)?;
    Some(InstanceCapacity {
        cpu: Cpu::cores(v),
        memory: Memory::gib(v * gib_per_vcpu),
    })
}

/// Every instance type in the built-in table, for documentation and tests.
pub fn builtin_types() -> Vec<String> {
    FAMILIES
        .iter()
        .flat_map(|(f, _, sizes)| sizes.iter().map(move |s| format!("{f}.{s}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_list_is_the_table() {
        // What the config error lists: every family once, each one the table answers for.
        let families: Vec<&str> = families().collect();
        assert_eq!(families.len(), FAMILIES.len());
        let unique: std::collections::BTreeSet<_> = families.iter().collect();
        assert_eq!(unique.len(), families.len());
        for family in families {
            assert!(builtin(&format!("{family}.xlarge")).is_some(), "{family}");
        }
        assert!(builtin("x9z.xlarge").is_none());
    }

    #[test]
    fn published_figures() {
        // Spot checks against AWS's instance type pages.
        let cases = [
            ("r6i.2xlarge", 8, 64),
            ("r6id.2xlarge", 8, 64),
            ("c6id.4xlarge", 16, 32),
            ("r7i.large", 2, 16),
            ("r6i.32xlarge", 128, 1024),
            ("r7i.48xlarge", 192, 1536),
            ("c6i.4xlarge", 16, 32),
            ("c7i.8xlarge", 32, 64),
            ("m6i.xlarge", 4, 16),
            ("m6i.12xlarge", 48, 192),
        ];
        for (t, cpu, gib) in cases {
            let c = builtin(t).unwrap_or_else(|| panic!("{t} missing"));
            assert_eq!(c.cpu, Cpu::cores(cpu), "{t}");
            assert_eq!(c.memory, Memory::gib(gib), "{t}");
        }
        for t in [
            "r6i.48xlarge",
            "r7i.32xlarge",
            "x2idn.large",
            "r6i",
            "r6i.medium",
        ] {
            assert!(builtin(t).is_none(), "{t} should not be in the table");
        }
        assert_eq!(builtin_types().len(), 81);
    }
}
