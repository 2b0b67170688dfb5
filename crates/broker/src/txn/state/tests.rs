use super::*;

const MAX: i32 = 900_000;

fn parts(list: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
    list.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
}

fn stored(init: Init) -> TxnRecord {
    match init {
        Init::Store(r) => r,
        other => panic!("expected a record to store, got {other:?}"),
    }
}

#[test]
fn a_new_id_starts_at_epoch_zero_and_each_init_bumps_it() {
    assert_eq!(init(None, 60_000, (-1, -1), MAX, 0), Init::NeedsProducerId);
    let r = init_with_new_id(7, 60_000, 0);
    assert_eq!(
        (r.producer_id, r.producer_epoch, r.state),
        (7, 0, TxnState::Empty)
    );
    let r = stored(init(Some(&r), 30_000, (-1, -1), MAX, 5));
    assert_eq!(
        (r.producer_epoch, r.timeout_ms, r.updated_ms),
        (1, 30_000, 5)
    );
    // KIP-360: re-initialising with the current id and epoch bumps it too ...
    let r2 = stored(init(Some(&r), 30_000, (7, 1), MAX, 6));
    assert_eq!(r2.producer_epoch, 2);
    // ... and with anything else is fenced.
    assert_eq!(
        init(Some(&r2), 30_000, (7, 1), MAX, 7),
        Init::Refuse(ResponseError::ProducerFenced)
    );
    // An exhausted epoch needs a new producer id.
    let old = TxnRecord {
        producer_epoch: LAST_EPOCH,
        ..r2
    };
    assert_eq!(
        init(Some(&old), 30_000, (-1, -1), MAX, 8),
        Init::NeedsProducerId
    );
}

#[test]
fn timeouts_outside_the_limit_are_refused() {
    for bad in [0, -1, MAX + 1] {
        assert_eq!(
            init(None, bad, (-1, -1), MAX, 0),
            Init::Refuse(ResponseError::InvalidTransactionTimeout)
        );
    }
}

#[test]
fn a_transaction_opens_grows_prepares_and_completes() {
    let r = init_with_new_id(1, 60_000, 0);
    let a = parts(&[("t", 0)]);
    let open = add_partitions(Some(&r), 1, 0, &a, 10).unwrap().unwrap();
    assert_eq!((open.state, open.start_ms), (TxnState::Ongoing, 10));
    // Adding what is already there stores nothing.
    assert_eq!(add_partitions(Some(&open), 1, 0, &a, 11), Ok(None));
    let grown = add_partitions(Some(&open), 1, 0, &parts(&[("t", 1)]), 12)
        .unwrap()
        .unwrap();
    assert_eq!(grown.partitions, parts(&[("t", 0), ("t", 1)]));
    assert_eq!(
        grown.start_ms, 10,
        "the transaction started with its first partition"
    );
    let End::Store(prepared) = end(Some(&grown), 1, 0, true, 20) else {
        panic!("commit must prepare");
    };
    assert_eq!(prepared.state, TxnState::PrepareCommit);
    // While markers are written: retries and new work wait.
    assert_eq!(
        end(Some(&prepared), 1, 0, true, 21),
        End::Refuse(ResponseError::ConcurrentTransactions)
    );
    assert_eq!(
        add_partitions(Some(&prepared), 1, 0, &a, 21),
        Err(ResponseError::ConcurrentTransactions)
    );
    assert_eq!(
        init(Some(&prepared), 60_000, (-1, -1), MAX, 21),
        Init::Refuse(ResponseError::ConcurrentTransactions)
    );
    let done = complete(&prepared, 30).unwrap();
    assert_eq!((done.state, done.start_ms), (TxnState::CompleteCommit, -1));
    assert!(done.partitions.is_empty());
    assert_eq!(end(Some(&done), 1, 0, true, 31), End::AlreadyDone);
    assert_eq!(
        end(Some(&done), 1, 0, false, 31),
        End::Refuse(ResponseError::InvalidTxnState)
    );
    // The next transaction starts from a complete one.
    let next = add_partitions(Some(&done), 1, 0, &a, 40).unwrap().unwrap();
    assert_eq!((next.state, next.start_ms), (TxnState::Ongoing, 40));
}

#[test]
fn ending_a_transaction_without_partitions_completes_at_once() {
    let r = init_with_new_id(1, 60_000, 0);
    let open = TxnRecord {
        state: TxnState::Ongoing,
        ..r.clone()
    };
    let End::Store(done) = end(Some(&open), 1, 0, false, 5) else {
        panic!("abort must store");
    };
    assert_eq!(done.state, TxnState::CompleteAbort);
    // Abort with nothing open is not a valid transition.
    assert_eq!(
        end(Some(&r), 1, 0, false, 5),
        End::Refuse(ResponseError::InvalidTxnState)
    );
}

#[test]
fn wrong_ids_and_epochs_are_refused_with_kafkas_errors() {
    let r = init_with_new_id(1, 60_000, 0);
    let a = parts(&[("t", 0)]);
    assert_eq!(
        add_partitions(None, 1, 0, &a, 0),
        Err(ResponseError::InvalidProducerIdMapping)
    );
    assert_eq!(
        add_partitions(Some(&r), 2, 0, &a, 0),
        Err(ResponseError::InvalidProducerIdMapping)
    );
    assert_eq!(
        add_partitions(Some(&r), 1, 3, &a, 0),
        Err(ResponseError::ProducerFenced)
    );
    assert_eq!(
        end(None, 1, 0, true, 0),
        End::Refuse(ResponseError::InvalidProducerIdMapping)
    );
    assert_eq!(
        end(Some(&r), 1, 1, true, 0),
        End::Refuse(ResponseError::ProducerFenced)
    );
}

#[test]
fn a_second_producer_fences_the_first_and_aborts_its_transaction() {
    let r = init_with_new_id(1, 60_000, 0);
    let open = add_partitions(Some(&r), 1, 0, &parts(&[("t", 0)]), 10)
        .unwrap()
        .unwrap();
    let Init::FenceAndAbort(fencing) = init(Some(&open), 60_000, (-1, -1), MAX, 20) else {
        panic!("an open transaction must be aborted first");
    };
    assert_eq!(
        (fencing.producer_epoch, fencing.state),
        (1, TxnState::PrepareEpochFence)
    );
    assert_eq!(
        fencing.partitions, open.partitions,
        "markers go to every partition"
    );
    // The old producer's epoch is now refused everywhere.
    assert_eq!(
        end(Some(&fencing), 1, 0, true, 21),
        End::Refuse(ResponseError::ProducerFenced)
    );
    let aborted = complete(&fencing, 22).unwrap();
    assert_eq!(aborted.state, TxnState::CompleteAbort);
    // The retried InitProducerId gets the epoch after the abort's.
    assert_eq!(
        stored(init(Some(&aborted), 60_000, (-1, -1), MAX, 23)).producer_epoch,
        2
    );
}

#[test]
fn timeouts_abort_under_a_new_epoch_and_idle_ids_expire() {
    let r = init_with_new_id(1, 1_000, 0);
    let open = add_partitions(Some(&r), 1, 0, &parts(&[("t", 0)]), 10)
        .unwrap()
        .unwrap();
    assert_eq!(abort_if_timed_out(&open, 1_010), None);
    let aborting = abort_if_timed_out(&open, 1_011).unwrap();
    assert_eq!(
        (aborting.producer_epoch, aborting.state),
        (1, TxnState::PrepareEpochFence)
    );
    assert_eq!(abort_if_timed_out(&r, i64::MAX), None, "nothing open");
    assert!(
        !expired(&open, 100, i64::MAX),
        "an open transaction never expires"
    );
    let done = complete(&aborting, 2_000).unwrap();
    assert!(!expired(&done, 100, 2_100));
    assert!(expired(&done, 100, 2_101));
}

#[test]
fn only_partitions_of_the_open_transaction_verify() {
    let r = init_with_new_id(1, 60_000, 0);
    let tp = ("t".to_owned(), 0);
    assert_eq!(
        verify(Some(&r), 1, 0, &tp),
        Err(ResponseError::InvalidTxnState)
    );
    let open = add_partitions(Some(&r), 1, 0, &parts(&[("t", 0)]), 10)
        .unwrap()
        .unwrap();
    assert_eq!(verify(Some(&open), 1, 0, &tp), Ok(()));
    assert_eq!(
        verify(Some(&open), 1, 0, &("t".to_owned(), 1)),
        Err(ResponseError::InvalidTxnState)
    );
    assert_eq!(
        verify(Some(&open), 1, 1, &tp),
        Err(ResponseError::ProducerFenced)
    );
    assert_eq!(
        verify(None, 1, 0, &tp),
        Err(ResponseError::InvalidProducerIdMapping)
    );
}
