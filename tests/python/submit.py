#!/usr/bin/env python3
"""An independent gRPC client for avsnode, in Python: proof that the wire format is plain gRPC.

Compiles avsnode's .proto files with grpc_tools.protoc into a temporary directory at run time (no
generated code is committed), then for each task of the input file:

- calls eigenlayer.hourglass.v1.ExecutorService/SubmitTask, and
- sends the same task on one avsnode.v1.TaskStream/Open stream,

and writes what came back as JSON. It does no cryptography: the Rust test signs the tasks and
verifies the answers.

Input (--task): {"tasks": [{"task_id": "0x…", "aggregator_address": "0x…", "avs_address": "0x…",
"payload": "<hex>", "signature": "<hex>", "operator_set_id": 0, "reference_timestamp": 0,
"executor_address": "0x…", "task_block_number": 0, "version": 1, "deadline_unix_ms": 0}]}
Output (--out): {"results": [{"unary": {TaskResult fields, bytes as hex} | {"error": {"code":
"NAME", "message": "…"}}, "stream": {"result": {…}} | {"rejection": {…}}}]}
"""

import argparse
import json
import os
import sys
import tempfile


def compile_protos(proto_dir, out_dir):
    import grpc_tools
    from grpc_tools import protoc

    protos = []
    for root, _, files in os.walk(proto_dir):
        for name in files:
            if name.endswith(".proto"):
                protos.append(os.path.relpath(os.path.join(root, name), proto_dir))
    if not protos:
        sys.exit(f"no .proto files under {proto_dir}")
    args = ["grpc_tools.protoc", f"-I{proto_dir}"]
    # The well-known types shipped with grpc_tools (not imported today; harmless if absent).
    bundled = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    if os.path.isdir(bundled):
        args.append(f"-I{bundled}")
    args += [f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + sorted(protos)
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {proto_dir}")
    sys.path.insert(0, out_dir)


def result_fields(result):
    return {
        "task_id": result.task_id,
        "operator_address": result.operator_address,
        "output": result.output.hex(),
        "result_signature": result.result_signature.hex(),
        "avs_address": result.avs_address,
        "operator_set_id": result.operator_set_id,
        "auth_signature": result.auth_signature.hex(),
        "version": result.version,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--address", required=True, help="host:port of the intake")
    parser.add_argument("--task", required=True, help="JSON file of signed tasks")
    parser.add_argument("--out", required=True, help="JSON file to write the answers to")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    import grpc

    with tempfile.TemporaryDirectory(prefix="avsnode-py-") as generated:
        compile_protos(args.proto_dir, generated)
        from eigenlayer.hourglass.v1.executor import executor_pb2, executor_pb2_grpc
        from avsnode.v1 import stream_pb2, stream_pb2_grpc

        with open(args.task) as f:
            tasks = json.load(f)["tasks"]
        submissions = [
            executor_pb2.TaskSubmission(
                task_id=t["task_id"],
                aggregator_address=t["aggregator_address"],
                avs_address=t["avs_address"],
                payload=bytes.fromhex(t["payload"]),
                signature=bytes.fromhex(t["signature"]),
                operator_set_id=t["operator_set_id"],
                reference_timestamp=t["reference_timestamp"],
                executor_address=t["executor_address"],
                task_block_number=t["task_block_number"],
                version=t["version"],
                deadline_unix_ms=t["deadline_unix_ms"],
            )
            for t in tasks
        ]

        answers = []
        with grpc.insecure_channel(args.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
            executor = executor_pb2_grpc.ExecutorServiceStub(channel)
            for submission in submissions:
                try:
                    result = executor.SubmitTask(submission, timeout=args.timeout)
                    answers.append({"unary": result_fields(result)})
                except grpc.RpcError as e:
                    answers.append(
                        {"unary": {"error": {"code": e.code().name, "message": e.details()}}}
                    )

            stream = stream_pb2_grpc.TaskStreamStub(channel)
            requests = iter([stream_pb2.StreamRequest(task=s) for s in submissions])
            events = {}
            # The node answers in completion order; one event per task, then the client closes.
            call = stream.Open(requests, timeout=args.timeout)
            for event in call:
                kind = event.WhichOneof("kind")
                if kind == "result":
                    events[event.result.task_id] = {"result": result_fields(event.result)}
                elif kind == "rejection":
                    r = event.rejection
                    events[r.task_id] = {
                        "rejection": {"task_id": r.task_id, "code": r.code, "message": r.message}
                    }
                if len(events) == len(submissions):
                    call.cancel()
                    break
            for submission, answer in zip(submissions, answers):
                answer["stream"] = events.get(submission.task_id)

    with open(args.out, "w") as f:
        json.dump({"results": answers}, f, indent=1)


if __name__ == "__main__":
    main()
