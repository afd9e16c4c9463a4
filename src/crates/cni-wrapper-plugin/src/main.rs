//! The `cni-wrapper-plugin` binary: the CNI harness around [`cni_wrapper_plugin::Wrapper`].

fn main() {
    silk_cni_skel::run(&cni_wrapper_plugin::Wrapper)
}
