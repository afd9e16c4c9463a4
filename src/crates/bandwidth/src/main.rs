//! The `bandwidth` binary: the CNI harness around [`bandwidth::Bandwidth`].

fn main() {
    silk_cni_skel::run(&bandwidth::Bandwidth)
}
