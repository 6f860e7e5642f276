//! The typed decoder on batch bodies (`/event/batch`, JSON `/event/bulk`)
//! against the general path, on the random events of `differential`.

use super::*;

/// The same for a batch body, stored all or nothing.
pub(super) fn general_batch(
    body: &[u8],
    project: &ProjectSnapshot,
    limits: &IngestLimits,
) -> Result<Vec<(String, RecordBatch)>, &'static str> {
    let request = crate::decode::decode_batch(body, limits).map_err(|_| "refused")?;
    let inputs = request
        .events
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "refused an event")?;
    if request.api.upload_time.is_some() {
        return Err("corrects the clock skew");
    }
    general_of(inputs, project, limits)
}

/// A batch body (`/event/batch`, JSON `/event/bulk`) of the same events.
fn batch_body(rng: &mut StdRng, wild: f64) -> String {
    let events: Vec<String> = (0..rng.random_range(1..5))
        .map(|_| event(rng, wild))
        .collect();
    let api = [
        "",
        "\"api\":null,",
        "\"api\":{\"api_key\":\"k\"},",
        "\"api\":{\"api_key\":\"k\",\"upload_time\":1},",
        "\"api\":{\"api_key\":5},",
    ][rng.random_range(0..5)];
    format!("{{{api}\"events\":[{}]}}", events.join(","))
}

#[test]
fn the_typed_batch_decoder_stores_what_the_general_path_would() {
    let (project, limits) = (project(), limits());
    let mut rng = StdRng::seed_from_u64(19);
    let mut taken = 0;
    let rounds = 20_000;
    for _ in 0..rounds {
        let body = batch_body(&mut rng, 0.15);
        let Ok(typed) =
            crate::typed::decode_batch_typed(body.as_bytes(), &project, &limits, SERVER_TIME)
        else {
            continue;
        };
        taken += 1;
        match general_batch(body.as_bytes(), &project, &limits) {
            Ok(expected) => assert_eq!(typed.batches, expected, "{body}"),
            Err(why) => panic!("the typed decoder took a batch whose general path {why}:\n{body}"),
        }
        let key = crate::typed::batch_body_key(body.as_bytes());
        assert_eq!(typed.api_key, key, "{body}");
    }
    // Not vacuous: batches of envelopes that fit took the typed path.
    assert!(
        taken > rounds / 50,
        "typed decoder took {taken} of {rounds}"
    );
}
