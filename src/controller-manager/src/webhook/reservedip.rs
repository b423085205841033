//! SpiderReservedIP admission (§1.4): defaulting and validation, pure.

use kube::ResourceExt;
use spiderpool_api::SpiderReservedIP;
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::range::{IpRange, range_ip_version};
use spiderpool_ipam::settings::ClusterSettings;

use super::common::{IP_VERSION_FIELD, IPS_FIELD, merge_if_several, validate_ip_version};
use super::field::{BadValue, Denial, FieldError};

pub const KIND: &str = "SpiderReservedIP";
const MISSING_VERSION: &str =
    "is not generated correctly, 'spec.ips' is empty or 'spec.ips[0]' may be invalid";

/// `mutateReservedIP`; errors are for logging only.
pub fn mutate(reserved: &mut SpiderReservedIP) -> Result<(), String> {
    if reserved.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let Some(first) = reserved
        .spec
        .ips
        .as_ref()
        .and_then(|ips| ips.first())
        .cloned()
    else {
        return Err("empty 'spec.ips', noting to mutate".to_string());
    };
    let version = match reserved.spec.ip_version {
        Some(number) => IpVersion::from_number(number)
            .ok_or_else(|| "unsupported 'spec.ipVersion', nothing to mutate".to_string())?,
        None => {
            let version = range_ip_version(&first).ok_or_else(|| {
                format!("failed to generate 'spec.ipVersion' from 'spec.ips[0]' {first}, nothing to mutate")
            })?;
            reserved.spec.ip_version = Some(i64::from(version.number()));
            version
        }
    };
    merge_if_several(version, &mut reserved.spec.ips)
        .map_err(|error| format!("failed to merge 'spec.ips': {error}"))
}

fn validate_spec(
    reserved: &SpiderReservedIP,
    settings: &ClusterSettings,
) -> Result<(), FieldError> {
    let version = validate_ip_version(reserved.spec.ip_version, settings, MISSING_VERSION)?;
    for (index, range) in reserved
        .spec
        .ips
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        IpRange::parse(version, range).map_err(|error| {
            FieldError::invalid(
                format!("{IPS_FIELD}[{index}]"),
                BadValue::str(range),
                error.to_string(),
            )
        })?;
    }
    Ok(())
}

/// Validation on CREATE.
pub fn validate_create(
    reserved: &SpiderReservedIP,
    settings: &ClusterSettings,
) -> Result<(), Denial> {
    validate_spec(reserved, settings)
        .map_err(|error| Denial::invalid_one(KIND, &reserved.name_any(), error))
}

/// Validation on UPDATE: one update that marks the object terminating is allowed, later ones not.
pub fn validate_update(
    old: &SpiderReservedIP,
    new: &SpiderReservedIP,
    settings: &ClusterSettings,
) -> Result<(), Denial> {
    if new.metadata.deletion_timestamp.is_some() {
        if old.metadata.deletion_timestamp.is_none() {
            return Ok(());
        }
        return Err(Denial::forbidden_plain(
            "cannot update a terminating ReservedIP",
        ));
    }
    if let (Some(new_version), Some(old_version)) = (new.spec.ip_version, old.spec.ip_version)
        && new_version != old_version
    {
        return Err(Denial::invalid_one(
            KIND,
            &new.name_any(),
            FieldError::forbidden(IP_VERSION_FIELD, "is not changeable"),
        ));
    }
    validate_create(new, settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reserved(ips: &[&str]) -> SpiderReservedIP {
        serde_json::from_value(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": KIND,
            "metadata": {"name": "r"}, "spec": {"ips": ips}
        }))
        .unwrap()
    }

    #[test]
    fn defaulting_derives_the_family_from_the_first_range() {
        // G43
        let mut v4 = reserved(&["172.18.40.1-172.18.40.2"]);
        mutate(&mut v4).unwrap();
        assert_eq!(v4.spec.ip_version, Some(4));
        let mut v6 = reserved(&["abcd:1234::1-abcd:1234::2"]);
        mutate(&mut v6).unwrap();
        assert_eq!(v6.spec.ip_version, Some(6));
        let mut bad = reserved(&["invalid IP range"]);
        assert!(mutate(&mut bad).is_err());
        assert_eq!(bad.spec.ip_version, None);
        assert_eq!(
            validate_create(&bad, &ClusterSettings::default())
                .unwrap_err()
                .message(),
            "SpiderReservedIP.spiderpool.spidernet.io \"r\" is invalid: spec.ipVersion: Invalid value: null: is not generated correctly, 'spec.ips' is empty or 'spec.ips[0]' may be invalid"
        );
        let mut several = reserved(&[
            "172.18.40.10",
            "172.18.40.1-172.18.40.2",
            "172.18.40.2-172.18.40.3",
        ]);
        mutate(&mut several).unwrap();
        assert_eq!(
            several.spec.ips,
            Some(vec![
                "172.18.40.1-172.18.40.3".to_string(),
                "172.18.40.10".into()
            ])
        );
    }

    #[test]
    fn every_range_must_be_of_the_family() {
        let mut mixed = reserved(&["10.0.0.1", "fd00::1"]);
        mixed.spec.ip_version = Some(4);
        assert_eq!(
            validate_create(&mixed, &ClusterSettings::default())
                .unwrap_err()
                .message(),
            "SpiderReservedIP.spiderpool.spidernet.io \"r\" is invalid: spec.ips[1]: Invalid value: \"fd00::1\": invalid IP range format in IPv4 'fd00::1'"
        );
    }

    #[test]
    fn terminating_objects_take_one_update() {
        let old = reserved(&["10.0.0.1"]);
        let mut new = old.clone();
        new.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(validate_update(&old, &new, &ClusterSettings::default()).is_ok());
        assert_eq!(
            validate_update(&new, &new, &ClusterSettings::default())
                .unwrap_err()
                .message(),
            "forbidden: cannot update a terminating ReservedIP"
        );
    }
}
