//! Unit tests of `privcmd`.

use super::*;

#[test]
fn open_without_xen_is_not_xen() {
    // This machine has no /dev/xen.
    if std::path::Path::new(PRIVCMD_PATH).exists() {
        eprintln!("skipping: {PRIVCMD_PATH} exists here");
        return;
    }
    let err = Privcmd::open().expect_err("no privcmd here");
    assert_eq!(
        err,
        Error::NotXen {
            path: "/dev/xen/privcmd"
        }
    );
    assert_eq!(
        err.to_string(),
        "not a Xen dom0: /dev/xen/privcmd not found"
    );
}

#[test]
fn version_decoding() {
    let v = XenVersion::from_raw(0x0004_0011);
    assert_eq!(
        v,
        XenVersion {
            major: 4,
            minor: 17
        }
    );
    assert_eq!(v.to_string(), "4.17");
}

/// `/dev/null` accepts open but not the privcmd ioctl: exercises the ioctl error path,
/// the anonymous scratch buffer and the "no caching on non-EACCES errors" rule.
#[test]
fn ioctl_errors_are_typed() {
    let mut p = match Privcmd::open_paths("/dev/null", Some("/nonexistent/hypercall")) {
        Ok(p) => p,
        Err(e)
            if matches!(
                e.errno(),
                Some(errno::EAGAIN | errno::ENOMEM | errno::EPERM)
            ) =>
        {
            eprintln!("skipping: locked memory refused here: {e}");
            return;
        }
        Err(e) => panic!("unexpected: {e}"),
    };
    assert!(!p.has_hypercall_device());
    let e = p.xen_version().expect_err("/dev/null is not privcmd");
    assert_eq!(e, Error::Xen(XenError::new("xen_version", errno::ENOTTY)));
    let e = p.pause(1).expect_err("/dev/null is not privcmd");
    assert_eq!(
        e,
        Error::Xen(XenError::new("domctl getdomaininfo", errno::ENOTTY)),
        "version probe error surfaces"
    );
    p.set_domctl_interface_version(0x15);
    let e = p.pause(1).expect_err("/dev/null is not privcmd");
    assert_eq!(
        e,
        Error::Xen(XenError::new("domctl pausedomain", errno::ENOTTY))
    );
    // Only Xen's EINVAL (already on) means "on": any other failure is one.
    let e = p.logdirty_ensure(1).expect_err("not privcmd");
    assert_eq!(
        e,
        Error::Xen(XenError::new("domctl shadow_op", errno::ENOTTY))
    );
    let e = p.maximum_gpfn(1).expect_err("not privcmd");
    assert!(e
        .to_string()
        .starts_with("memory_op maximum_gpfn failed: ENOTTY"));

    // Argument checks happen before any hypercall.
    let mut small = p.alloc_buf(1).expect("one page");
    assert!(matches!(
        p.logdirty_clean(1, &mut small, 4096 * 8 + 1, true),
        Err(Error::BufferTooSmall {
            needed: 4097,
            have: 4096,
            ..
        })
    ));
    assert!(matches!(
        p.shadow_op(1, ShadowOp::Off, Some(&mut small), 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        p.get_vcpu_context(1, 0, &mut small),
        Err(Error::BufferTooSmall { needed: 5168, .. })
    ));
    assert!(p.populate_physmap(1, &[]).is_ok());
}
