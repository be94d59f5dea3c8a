#!/bin/sh
# Regenerates the Python protobuf and gRPC modules next to the .proto files, so that they
# import each other as shoal.etcdapi.pb.*. Needs grpcio-tools (pip install grpcio-tools):
#   PYTHON=.venv/bin/python sh src/shoal/etcdapi/pb/generate.sh
# The generated modules are committed; regenerate after editing a .proto file.
set -eu
python=${PYTHON:-python3}
case "$python" in */*) python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python") ;; esac
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../.." && pwd)
cd "$src"
"$python" -m grpc_tools.protoc -I "$src" --python_out="$src" --grpc_python_out="$src" \
  --pyi_out="$src" \
  shoal/etcdapi/pb/kv.proto shoal/etcdapi/pb/auth.proto shoal/etcdapi/pb/rpc.proto \
  shoal/etcdapi/pb/v3lock.proto shoal/etcdapi/pb/v3election.proto
# message-only protos get no services: drop their empty gRPC modules
rm -f "$here/kv_pb2_grpc.py" "$here/auth_pb2_grpc.py"
# our messages go in a private descriptor pool (see _pool.py)
for f in "$here"/*_pb2.py; do
  sed -i -e 's/_descriptor_pool\.Default()/_pool.POOL/' \
    -e 's/^from google\.protobuf\.internal import builder as _builder$/&\nfrom shoal.etcdapi.pb import _pool/' "$f"
done
# generated code is not linted
for f in "$here"/*_pb2.py "$here"/*_pb2.pyi "$here"/*_pb2_grpc.py; do
  { echo "# ruff: noqa"; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
