//! xen-sys
