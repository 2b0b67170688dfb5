//! `BlindShareRegister` carries a real share losslessly, and the broker-side
//! transforms on the decoded share match the original (KAT key, 2048 bits).

mod common;

use veil_blind::protocol::{self, Message, Request, ShareRegisterRequest};

#[test]
fn share_register_round_trips_a_real_share() {
    let f = common::fixture();
    let req = ShareRegisterRequest::new("User:alice", &f.alice_share).unwrap();
    let frame = protocol::encode_request_frame(&req, 1, None).unwrap();
    let Some((_, Request::ShareRegister(back))) =
        protocol::decode_request_frame(&frame[4..]).unwrap()
    else {
        panic!("not a share register");
    };
    assert_eq!(back, req);
    assert!(!format!("{back:?}").contains(&format!("{:?}", &req.e2[..4])));
    let share = back.share().unwrap();
    let c = f.alice.token("orders.eu").unwrap();
    assert_eq!(
        share.resolve(c.as_bytes()).unwrap(),
        f.alice_share.resolve(c.as_bytes()).unwrap()
    );
    // A swapped or truncated exponent is refused.
    let mut bad = back.clone();
    bad.e2.truncate(255);
    assert!(bad.share().is_err());
    assert!(bad.encode(&mut Vec::new(), 0).is_err());
}
