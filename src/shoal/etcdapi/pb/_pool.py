"""The descriptor pool our generated etcd messages live in. Not protobuf's default pool: other
etcd clients (aetcd, etcd3, ...) register the very same names (mvccpb.KeyValue, ...) there,
and two registrations of one name in one pool refuse to load together."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
