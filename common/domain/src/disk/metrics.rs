//! The disk's and the NBD export's Prometheus metrics, the same in both daemons (`prefix` is
//! `hsb_primary` or `hsb_standby`): what the guest wrote and waited for, errors, what the
//! checkpoints applied, resynchronisations, and what the export served. Read from the disk's
//! and the export's own counters at scrape time.

use hsb_common::kit::metrics::Exposition;

use super::export::NbdExport;
use super::Disk;

/// The disk's families, then the export's (when there is one).
pub fn export(e: &mut Exposition, prefix: &str, disk: &Disk, nbd: Option<&NbdExport>) {
    let st = disk.stats();
    let c = |e: &mut Exposition, name: &str, help: &str, v: u64| {
        e.counter(&format!("{prefix}_{name}"), help, v);
    };
    c(
        e,
        "disk_writes_total",
        "guest writes to the disk (the guest's, or the activated replica's)",
        st.writes,
    );
    c(
        e,
        "disk_write_bytes_total",
        "bytes of the guest's disk writes",
        st.bytes,
    );
    c(e, "disk_waits_total", "guest disk writes that waited (the epoch's journal full, a resynchronisation catching up, or a sync in flight)", st.waits);
    c(
        e,
        "disk_errors_total",
        "I/O errors on the disk image or the files beside it",
        st.errors,
    );
    c(
        e,
        "disk_applied_writes_total",
        "disk writes applied from checkpoints (a replica's)",
        st.applied_writes,
    );
    c(
        e,
        "disk_applied_bytes_total",
        "bytes of the disk writes applied from checkpoints",
        st.applied_bytes,
    );
    c(
        e,
        "disk_resyncs_total",
        "disk resynchronisations begun",
        st.resyncs,
    );
    c(
        e,
        "disk_full_copies_total",
        "disk resynchronisations that copied the whole disk (an unknown or mismatched disk)",
        st.full_copies,
    );
    e.gauge(
        &format!("{prefix}_disk_resync_tracks"),
        "tracks copied by the last disk resynchronisation",
        st.resync_tracks as f64,
    );
    let Some(n) = nbd else { return };
    let s = &n.stats;
    e.gauge(
        &format!("{prefix}_nbd_client_connected"),
        "1 while a client (in dom0, the kernel's nbd driver) is connected to the disk's NBD export",
        f64::from(u8::from(n.connected())),
    );
    c(
        e,
        "nbd_connections_total",
        "clients the NBD export accepted",
        s.connections,
    );
    c(
        e,
        "nbd_refused_total",
        "clients refused while another was connected",
        s.refused,
    );
    c(e, "nbd_reads_total", "NBD reads served", s.reads);
    c(e, "nbd_writes_total", "NBD writes served", s.writes);
    c(
        e,
        "nbd_write_bytes_total",
        "bytes of the NBD writes served",
        s.write_bytes,
    );
    c(e, "nbd_flushes_total", "NBD flushes served", s.flushes);
    c(
        e,
        "nbd_errors_total",
        "NBD commands answered with an error (a replica not activated refuses writes)",
        s.errors,
    );
    c(
        e,
        "nbd_protocol_errors_total",
        "NBD connections closed for input that breaks the protocol",
        s.protocol_errors,
    );
    c(
        e,
        "nbd_waits_total",
        "NBD writes that waited for a checkpoint to take the epoch's journal",
        s.waits,
    );
}
