//! The two-host Xen rig itself (tests/xen-rig): not part of `just test` (root, TCG, minutes).
//! Run with `cargo test -p hsb-tests --test xen_rig -- --ignored --nocapture` after
//! `just xen-rig-images`.

use hsb_tests::xenrig::{self, addr, RigNet, XenRig};

#[test]
#[ignore = "boots two Xen hosts under QEMU (root, about 2 minutes): run with --ignored"]
fn rig_hosts_guest_and_networks() {
    if let Err(why) = xenrig::available() {
        hsb_tests::skip("rig_hosts_guest_and_networks", &why);
        return;
    }
    let rig = XenRig::up(None, None).expect("rig up");
    for n in [1, 2] {
        let info = rig.run_ok(n, "xl info", 120).expect("xl info");
        assert!(info.contains("xen_version            : 4.17"), "{info}");
    }
    let (out, code) = rig.run(1, "echo out; echo err >&2; exit 7", 60).unwrap();
    assert_eq!((out.trim(), code), ("out\nerr", 7));

    rig.guest_up(1).expect("guest up");
    assert_eq!(rig.counter("INCR").as_deref(), Some("1"));
    assert_eq!(rig.counter("GET").as_deref(), Some("1"));
    let list = rig.run_ok(1, "xl list", 60).unwrap();
    assert!(list.contains("hsb-guest"), "{list}");

    // The replication network between the hosts, cut and healed.
    let ping = format!("ping -c1 -W3 {}", addr::repl(1));
    rig.run_ok(2, &ping, 60).expect("replication network up");
    rig.cut(RigNet::Repl, true).unwrap();
    assert_ne!(
        rig.run(2, &ping, 60).unwrap().1,
        0,
        "cut replication network"
    );
    rig.run_ok(2, &format!("ping -c1 -W3 {}", addr::dom0(1)), 60)
        .expect("the rig network stays up while replication is cut");
    rig.cut(RigNet::Repl, false).unwrap();
    rig.run_ok(2, &ping, 60).expect("healed");

    // A host crash: the guest is gone with its host.
    rig.kill(1).unwrap();
    assert_eq!(rig.counter("GET"), None);
    assert_ne!(rig.run(1, "true", 10).map(|r| r.1).unwrap_or(1), 0);
}
