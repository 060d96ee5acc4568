//! Each adapter's `Node` is a type of its own, through which every group of
//! node methods works: its constructors, the runtime-generic `Reign`'s
//! methods and the Sans-IO handle's. An alias of `Reign<R>` would work the
//! same in code, but its rustdoc page would list none of those methods.

use std::time::Duration;

use reign_driver::Reign;

const WAIT: Duration = Duration::from_secs(10);

/// Implemented for each adapter's `Node` and for each `Reign<R>`: were an
/// adapter's `Node` an alias of `Reign<R>` again, two of these impls would
/// overlap and this file would not compile.
trait OwnType {}
impl OwnType for reign_tokio::Node {}
impl OwnType for Reign<reign_tokio::Tokio> {}
impl OwnType for reign_async_std::Node {}
impl OwnType for Reign<reign_async_std::AsyncStd> {}
impl OwnType for reign_smol::Node {}
impl OwnType for Reign<reign_smol::Smol> {}

/// Compiles for the two types [`OwnType`] tells apart.
fn own_type<T: OwnType>(_: &T) {}

/// On adapter `$krate`, whose runtime type is `$runtime`, run by `$block_on`:
/// one method of each group, called on its `Node`.
macro_rules! every_group_through_node {
    ($krate:ident, $runtime:ident, $block_on:expr) => {{
        use $krate::{$runtime, Node};
        $block_on(async {
            // Defined on the adapter's `Node`.
            let node = Node::local();
            // The Sans-IO handle's (`reign_proto::Node`).
            let (addr, mailbox) = node.new_mailbox();
            addr.send(7u64).unwrap();
            // The runtime-generic node's (`reign_driver::Reign`).
            let msg = node.recv_timeout(&mailbox, WAIT).await.unwrap();
            assert_eq!(msg.downcast::<u64>().unwrap(), 7);
            // Both ways between the adapter's type and the generic one.
            let generic: Reign<$runtime> = node.clone().into();
            own_type(&node);
            own_type(&generic);
            assert_eq!(Node::from(generic).id(), node.id());
            node.shutdown().await;
            assert!(addr.send(8u64).is_err(), "shutdown closes the mailboxes");
        })
    }};
}

#[test]
fn every_group_of_methods_works_through_each_adapters_node() {
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    every_group_through_node!(reign_tokio, Tokio, |f| tokio_rt.block_on(f));
    every_group_through_node!(reign_async_std, AsyncStd, async_std::task::block_on);
    every_group_through_node!(reign_smol, Smol, smol::block_on);
}
