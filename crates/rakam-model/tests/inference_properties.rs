//! Properties of inference and coercion on arbitrary JSON: a value always
//! fits the column its own type created, and coercion never invents data.

use proptest::prelude::*;
use rakam_model::{coerce, infer_type, widening_for, FieldType, Fit, Scalar};
use serde_json::{json, Value};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1.0e12_f64..1.0e12).prop_map(|f| json!(f)),
        "[a-zA-Z0-9 _-]{0,20}".prop_map(Value::String),
        (1970_i32..2100, 1_u32..13, 1_u32..29)
            .prop_map(|(y, m, d)| json!(format!("{y:04}-{m:02}-{d:02}"))),
        (0_i64..4_000_000_000_000).prop_map(|ms| {
            let instant = chrono::DateTime::from_timestamp_millis(ms).expect("in range");
            json!(instant.to_rfc3339())
        }),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => proptest::collection::vec(scalar(), 0..5).prop_map(Value::Array),
    ]
}

proptest! {
    #[test]
    fn a_value_fits_the_type_inferred_from_it(v in value()) {
        if let Some(field_type) = infer_type(&v) {
            let fit = coerce(&v, &field_type);
            prop_assert!(matches!(fit, Fit::Value(_)), "{v} does not fit its own type {field_type}: {fit:?}");
        }
    }

    #[test]
    fn long_columns_keep_integers_exactly(n in any::<i64>()) {
        prop_assert_eq!(coerce(&json!(n), &FieldType::Long), Fit::Value(Scalar::Long(n)));
        prop_assert_eq!(widening_for(&json!(n), &FieldType::Long), None);
    }

    #[test]
    fn doubles_hold_integers_only_when_exact(n in any::<i64>()) {
        match coerce(&json!(n), &FieldType::Double) {
            Fit::Value(Scalar::Double(d)) => prop_assert_eq!(d as i64, n),
            Fit::NoFit => prop_assert!(n.unsigned_abs() > 1_u64 << 53),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn strings_never_fit_numeric_columns(s in "[a-z]{1,10}") {
        prop_assert_eq!(coerce(&json!(s), &FieldType::Long), Fit::NoFit);
        prop_assert_eq!(coerce(&json!(s), &FieldType::Double), Fit::NoFit);
        prop_assert_eq!(coerce(&json!(s), &FieldType::Boolean), Fit::NoFit);
    }

    #[test]
    fn widening_is_what_coercion_asks_for(v in value()) {
        for column in [FieldType::Long, FieldType::Array(Box::new(FieldType::Long))] {
            let planned = widening_for(&v, &column);
            match coerce(&v, &column) {
                Fit::Widen(target) => prop_assert_eq!(planned, Some(target)),
                _ => prop_assert_eq!(planned, None),
            }
        }
    }
}
