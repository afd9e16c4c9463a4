//! The `silk-cni` binary: the CNI harness around [`silk_cni::SilkCni`].

fn main() {
    silk_cni_skel::run(&silk_cni::SilkCni)
}
