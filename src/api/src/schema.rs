//! Schema adjustments shared by the CRD types.
//!
//! Rust fields are `Option<T>` so that a read-modify-write never invents a value, but the
//! upstream CRDs do not mark those fields `nullable`. A nullable field keeps an explicit `null`
//! and is then never defaulted by the API server, whereas a non-nullable one has the `null`
//! pruned and the CRD default applied. To keep upstream's defaulting behaviour the spec and
//! status structs run [`tidy`] over their schema before kube's own transforms see it; it also
//! reflows the doc-comment descriptions so that `kubectl explain` wraps them itself.

use schemars::Schema;
use schemars::transform::transform_subschemas;
use serde_json::Value;

/// Applied to the spec and status structs, in this schema and every subschema:
/// - removes the "may be null" part that schemars adds for `Option<T>`: `type: [T, "null"]`
///   becomes `type: T`, `null` leaves `enum` lists, and `anyOf: [S, {type: null}]` collapses
///   into `S` (keeping sibling keywords such as `description` and `default`);
/// - joins the hard-wrapped lines of doc-comment descriptions, keeping blank-line paragraph
///   breaks.
pub(crate) fn tidy(schema: &mut Schema) {
    transform_subschemas(&mut tidy, schema);

    let Some(object) = schema.as_object_mut() else {
        return;
    };

    if let Some(Value::String(description)) = object.get_mut("description") {
        *description = reflow(description);
    }

    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|ty| ty != "null");
        if types.len() == 1 {
            let single = types.remove(0);
            object.insert("type".to_owned(), single);
        }
    }

    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|value| !value.is_null());
    }

    let collapsed = match object.get("anyOf") {
        Some(Value::Array(branches)) => {
            let mut non_null = branches.iter().filter(|branch| !is_null_schema(branch));
            match (non_null.next(), non_null.next()) {
                (Some(Value::Object(only)), None) if branches.len() > 1 => Some(only.clone()),
                _ => None,
            }
        }
        _ => None,
    };
    if let Some(inner) = collapsed {
        object.remove("anyOf");
        for (key, value) in inner {
            // The field's own keywords (description, default, ...) win over the inner type's.
            object.entry(key).or_insert(value);
        }
    }
}

fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn is_null_schema(value: &Value) -> bool {
    match value.get("type") {
        Some(Value::String(ty)) => ty == "null",
        Some(Value::Array(types)) => types.iter().all(|ty| ty == "null"),
        _ => value.get("enum") == Some(&Value::Array(vec![Value::Null])),
    }
}

/// Drops the `format` keyword of an integer field. Go's `int` and `uint` fields carry no format
/// upstream, while schemars would emit formats such as `uint32` that Kubernetes does not know.
pub(crate) fn no_format(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        object.remove("format");
    }
}

/// The OpenAPI schema of a CRD root type, generated exactly the way `#[derive(CustomResource)]`
/// does it (inlined subschemas, structural rewrites), for the kinds whose CRD is written by hand.
pub(crate) fn crd_schema_for<T: schemars::JsonSchema>()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let schema = generator.into_root_schema_for::<T>();
    serde_json::from_value(schema.to_value())
        .expect("a schemars schema of a plain struct always converts to JSONSchemaProps")
}

/// Marks a `LabelSelector` field atomic for server-side apply, as Kubernetes' own selector type
/// is: the selector map, its `matchExpressions` list and each expression's `values` list are
/// owned and replaced as a whole rather than merged entry by entry.
pub(crate) fn atomic_label_selector(schema: &mut Schema) {
    // The field is an `Option`: unwrap the nullable wrapper first so the selector's own
    // properties are at the top.
    tidy(schema);
    schema.insert("x-kubernetes-map-type".to_owned(), "atomic".into());
    let Some(expressions) = schema
        .get_mut("properties")
        .and_then(|properties| properties.get_mut("matchExpressions"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    expressions.insert("x-kubernetes-list-type".to_owned(), "atomic".into());
    if let Some(values) = expressions
        .get_mut("items")
        .and_then(|items| items.get_mut("properties"))
        .and_then(|properties| properties.get_mut("values"))
        .and_then(Value::as_object_mut)
    {
        values.insert("x-kubernetes-list-type".to_owned(), "atomic".into());
    }
}
