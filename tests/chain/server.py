#!/usr/bin/env python3
"""avsnode test chain: a small HTTP JSON-RPC server in front of eth-tester (py-evm backend).

At start-up it compiles the Vyper stand-ins in contracts/ (test stand-ins reproducing the
EigenLayer ABI surface, not EigenLayer code), checks every selector / event topic0 listed in
shared/CHAIN.md against them (exits non-zero on any mismatch), deploys AllocationManager,
KeyRegistrar and one ECDSACertificateVerifier, prints ONE JSON ready line on stdout, then serves.

    server.py --port 0 [--host 127.0.0.1]

Standard methods: eth_chainId, eth_blockNumber, net_version, eth_call, eth_getLogs,
eth_getBlockByNumber, eth_getBlockByHash (JSON-RPC batches supported).
Test-only methods: test_setAvsRegistrar, test_setAvsConfig, test_configureOperatorSet,
test_registerKey, test_deregisterKey, test_addToOperatorSet, test_removeFromOperatorSet,
test_mine, evm_snapshot, evm_revert, test_counts, test_resetCounts.
"""
import argparse
import collections
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import vyper
from eth.exceptions import BlockNotFound, HeaderNotFound, Revert
from eth.vm.spoof import SpoofTransaction
from eth_abi import decode, encode
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import SnapshotNotFound
from eth_utils import keccak, to_canonical_address, to_checksum_address

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRACTS = ["AllocationManager", "KeyRegistrar", "TaskAVSRegistrar", "ECDSACertificateVerifier"]
OPSET = "(address,uint32)"
# The ABI surface of shared/CHAIN.md, copied verbatim: (contract, signature) -> selector / topic0.
SELECTORS = {
    ("AllocationManager", "getAVSRegistrar(address)"): "0x304c10cd",
    ("AllocationManager", "isMemberOfOperatorSet(address,(address,uint32))"): "0x670d3ba2",
    ("AllocationManager", "getRegisteredSets(address)"): "0x79ae50cd",
    ("TaskAVSRegistrar", "getAvsConfig()"): "0x41f548f0",
    ("KeyRegistrar", "getOperatorSetCurveType((address,uint32))"): "0x7cffe48c",
    ("KeyRegistrar", "getBN254Key((address,uint32),address)"): "0x9a43e3fb",
    ("KeyRegistrar", "getECDSAAddress((address,uint32),address)"): "0x3b32a7bd",
    ("KeyRegistrar", "isRegistered((address,uint32),address)"): "0xbd30a0b9",
    ("ECDSACertificateVerifier", "domainSeparator()"): "0xf698da25",
}
# Return layouts (canonical output types) that CHAIN.md fixes.
OUTPUTS = {
    "getAVSRegistrar(address)": ["address"],
    "isMemberOfOperatorSet(address,(address,uint32))": ["bool"],
    "getRegisteredSets(address)": ["(address,uint32)[]"],
    "getAvsConfig()": ["(uint32,uint32[])"],
    "getOperatorSetCurveType((address,uint32))": ["uint8"],
    "getBN254Key((address,uint32),address)": ["(uint256,uint256)", "(uint256[2],uint256[2])"],
    "getECDSAAddress((address,uint32),address)": ["address"],
    "isRegistered((address,uint32),address)": ["bool"],
    "domainSeparator()": ["bytes32"],
    "version()": ["string"],
}
TOPICS = {
    ("AllocationManager", "OperatorAddedToOperatorSet(address indexed,(address,uint32))"):
        "0x43232edf9071753d2321e5fa7e018363ee248e5f2142e6c08edd3265bfb4895e",
    ("AllocationManager", "OperatorRemovedFromOperatorSet(address indexed,(address,uint32))"):
        "0xad34c3070be1dffbcaa499d000ba2b8d9848aefcac3059df245dd95c4ece14fe",
    ("AllocationManager", "AVSRegistrarSet(address,address)"):
        "0x2ae945c40c44dc0ec263f95609c3fdc6952e0aefa22d6374e44f2c997acedf85",
    ("KeyRegistrar", "KeyRegistered((address,uint32),address indexed,uint8,bytes)"):
        "0x1201ce0c5e577111bce91e907fd99cb183da5edc1e3fb650ca40769e4e9176dd",
    ("KeyRegistrar", "KeyDeregistered((address,uint32),address indexed,uint8)"):
        "0x28d3c3cee49478ec6fd219cfd685cd15cd01d95cabf69b4b7b57f9eaa3eb6442",
    ("KeyRegistrar", "OperatorSetConfigured((address,uint32),uint8)"):
        "0xb2266cb118e57095fcdbedb24dabd9fc9f5127e2dbedf62ce6ee71696fb8b6e7",
    ("TaskAVSRegistrar", "AvsConfigSet(uint32,uint32[])"):
        "0x836f1d33f6d85cfc7b24565d309c6e1486cf56dd3d8267a9651e05b88342ef51",
}
STANDARD = {"eth_chainId", "eth_blockNumber", "net_version", "eth_call", "eth_getLogs",
            "eth_getBlockByNumber", "eth_getBlockByHash"}
ZERO = b"\0" * 20
TX_GAS = 5_000_000


def log(*a):
    print("testchain:", *a, file=sys.stderr, flush=True)


class RpcError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


# ---------------------------------------------------------------- compile and check the ABI
def canon(p):
    t = p["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(canon(c) for c in p["components"]) + ")" + t[len("tuple"):]
    return t


def compile_contracts():
    out = {}
    for name in CONTRACTS:
        path = os.path.join(HERE, "contracts", name + ".vy")
        with open(path) as f:
            out[name] = vyper.compile_code(f.read(), contract_path=path,
                                           output_formats=["abi", "bytecode", "method_identifiers"])
    return out


def check_abi(compiled):
    bad = []
    for (c, sig), sel in SELECTORS.items():
        if "0x" + keccak(text=sig)[:4].hex() != sel:
            bad.append(f"CHAIN.md selector {sel} != keccak({sig})")
        if compiled[c]["method_identifiers"].get(sig) != sel:
            bad.append(f"{c} has no {sig} with selector {sel}")
    for c, out in compiled.items():
        for e in out["abi"]:
            if e["type"] == "function":
                sig = f"{e['name']}({','.join(canon(i) for i in e['inputs'])})"
                want = OUTPUTS.get(sig)
                if want is not None and [canon(o) for o in e["outputs"]] != want:
                    bad.append(f"{c}.{sig} returns {[canon(o) for o in e['outputs']]}, want {want}")
    for (c, sig), topic in TOPICS.items():
        if "0x" + keccak(text=sig.replace(" indexed", "")).hex() != topic:
            bad.append(f"CHAIN.md topic {topic} != keccak({sig})")
        events = {f"{e['name']}(" + ",".join(canon(i) + (" indexed" if i["indexed"] else "")
                                            for i in e["inputs"]) + ")"
                  for e in compiled[c]["abi"] if e["type"] == "event"}
        if sig not in events:
            bad.append(f"{c} has no event {sig} (has {sorted(events)})")
    if bad:
        raise SystemExit("testchain: ABI MISMATCH with CHAIN.md:\n  " + "\n  ".join(bad))


# ---------------------------------------------------------------- value helpers
def qty(x):
    if isinstance(x, bool) or x is None:
        raise RpcError(-32602, f"invalid quantity {x!r}")
    if isinstance(x, int):
        return x
    return int(x, 16) if x.lower().startswith("0x") else int(x)


def addr(x):
    if isinstance(x, int):
        return x.to_bytes(20, "big")
    return to_canonical_address(x)


def unhex(x):
    x = x or "0x"
    return bytes.fromhex(x[2:] if x.lower().startswith("0x") else x)


def hx(b):
    return "0x" + bytes(b).hex()


class Chain:
    def __init__(self):
        self.compiled = compile_contracts()
        check_abi(self.compiled)
        self.backend = PyEVMBackend()
        self.et = EthereumTester(self.backend)
        self.acct = self.et.get_accounts()[0]
        self.counts = collections.Counter()
        self.am, _ = self.deploy("AllocationManager")
        self.kr, _ = self.deploy("KeyRegistrar")
        self.ecdsa, _ = self.deploy("ECDSACertificateVerifier")
        out = self.eth_call({"to": self.ecdsa, "data": hx(keccak(text="version()")[:4])})
        self.version = decode(["string"], unhex(out))[0]
        self.counts.clear()

    @property
    def chain(self):
        return self.backend.chain  # replaced by eth-tester when reverting to genesis

    def head(self):
        return self.chain.get_canonical_head().block_number

    # ---- transactions (each one auto-mines its own block)
    def send(self, to, data):
        tx = {"from": self.acct, "data": hx(data), "gas": TX_GAS}
        if to:
            tx["to"] = to_checksum_address(to)
        rc = self.et.get_transaction_receipt(self.et.send_transaction(tx))
        if rc["status"] != 1:
            raise RpcError(-32000, "transaction reverted", {"block": rc["block_number"]})
        return rc

    def deploy(self, name, types=(), args=()):
        rc = self.send(None, unhex(self.compiled[name]["bytecode"]) + encode(list(types), list(args)))
        return to_checksum_address(rc["contract_address"]), rc["block_number"]

    def transact(self, to, sig, types, args):
        return self.send(to, keccak(text=sig)[:4] + encode(types, args))["block_number"]

    # ---- block lookups
    def number_of(self, tag):
        """Block number for a tag / hex / int / EIP-1898 object; error if above head or unknown."""
        if isinstance(tag, dict):
            if "blockHash" in tag:
                return self.number_of_hash(tag["blockHash"])
            tag = tag.get("blockNumber")
        if tag in (None, "latest", "pending", "safe", "finalized"):
            return self.head()
        if tag == "earliest":
            return 0
        n = qty(tag)
        if n > self.head():
            raise RpcError(-32000, f"header not found (block {n} above head {self.head()})")
        return n

    def number_of_hash(self, h):
        try:
            header = self.chain.chaindb.get_block_header_by_hash(unhex(h))
        except HeaderNotFound:
            raise RpcError(-32000, f"header for hash {h} not found") from None
        n = header.block_number
        if n > self.head() or self.chain.chaindb.get_canonical_block_hash(n) != header.hash:
            raise RpcError(-32000, f"block {h} is not canonical")
        return n

    def block_obj(self, n):
        block = self.chain.get_canonical_block_by_number(n)
        hd = block.header
        return {
            "number": hex(n), "hash": hx(hd.hash), "parentHash": hx(hd.parent_hash),
            "timestamp": hex(hd.timestamp), "stateRoot": hx(hd.state_root),
            "transactionsRoot": hx(hd.transaction_root), "receiptsRoot": hx(hd.receipt_root),
            "logsBloom": hx(hd.bloom.to_bytes(256, "big")), "miner": hx(hd.coinbase),
            "gasLimit": hex(hd.gas_limit), "gasUsed": hex(hd.gas_used),
            "baseFeePerGas": hex(hd.base_fee_per_gas), "mixHash": hx(hd.mix_hash),
            "nonce": hx(hd.nonce), "difficulty": hex(hd.difficulty), "extraData": hx(hd.extra_data),
            "sha3Uncles": hx(hd.uncles_hash), "uncles": [],
            "transactions": [hx(t.hash) for t in block.transactions],
        }

    # ---------------------------------------------------------------- standard methods
    def eth_chainId(self):
        return hex(self.chain.chain_id)

    def net_version(self):
        return str(self.chain.chain_id)

    def eth_blockNumber(self):
        return hex(self.head())

    def eth_call(self, tx, tag="latest"):
        data = unhex(tx.get("data") or tx.get("input"))
        self.counts[f"eth_call:{str(tx.get('to')).lower()}:{hx(data[:4])}"] += 1
        header = self.chain.get_canonical_block_header_by_number(self.number_of(tag))
        sender = addr(tx.get("from") or ZERO)
        # state after block `tag`, fee-free (as geth: no balance needed for the default `from`)
        with self.chain.get_vm(at_header=header).in_costless_state() as state:
            utx = self.chain.create_unsigned_transaction(
                nonce=state.get_nonce(sender), gas_price=0, gas=qty(tx.get("gas", header.gas_limit)),
                to=addr(tx["to"]), value=qty(tx.get("value", 0)), data=data)
            comp = state.costless_execute_transaction(SpoofTransaction(utx, from_=sender))
        if comp.is_error:
            if isinstance(comp.error, Revert):
                raise RpcError(3, "execution reverted", hx(comp.output))
            raise RpcError(-32000, f"execution failed: {comp.error!r}")
        return hx(comp.output)

    def eth_getLogs(self, f):
        head = self.head()
        if f.get("blockHash"):
            lo = hi = self.number_of_hash(f["blockHash"])
        else:
            def tagnum(t):
                if t in (None, "latest", "pending", "safe", "finalized"):
                    return head
                return 0 if t == "earliest" else qty(t)
            lo, hi = tagnum(f.get("fromBlock")), min(tagnum(f.get("toBlock")), head)
        a = f.get("address")
        addrs = None if a is None else {addr(x) for x in ([a] if isinstance(a, (str, int)) else a)}
        want = [None if t is None else {unhex(x) for x in ([t] if isinstance(t, str) else t)} or None
                for t in (f.get("topics") or [])]
        out = []
        for n in range(lo, hi + 1):
            block = self.chain.get_canonical_block_by_number(n)
            if not block.transactions:
                continue
            li = 0
            for ti, (t, rc) in enumerate(zip(block.transactions, block.get_receipts(self.chain.chaindb))):
                for lg in rc.logs:
                    topics = [x.to_bytes(32, "big") for x in lg.topics]
                    ok = (addrs is None or lg.address in addrs) and len(topics) >= len(want) and all(
                        w is None or topics[i] in w for i, w in enumerate(want))
                    if ok:
                        out.append({"address": to_checksum_address(lg.address), "topics": [hx(x) for x in topics],
                                    "data": hx(lg.data), "blockNumber": hex(n), "blockHash": hx(block.hash),
                                    "transactionHash": hx(t.hash), "transactionIndex": hex(ti),
                                    "logIndex": hex(li), "removed": False})
                    li += 1
        return out

    def eth_getBlockByNumber(self, tag="latest", full=False):
        if tag not in ("latest", "pending", "safe", "finalized", "earliest") and qty(tag) > self.head():
            return None
        return self.block_obj(self.number_of(tag))

    def eth_getBlockByHash(self, h, full=False):
        try:
            return self.block_obj(self.number_of_hash(h))
        except RpcError:
            return None

    # ---------------------------------------------------------------- test-only methods
    def test_setAvsRegistrar(self, avs):
        reg, _ = self.deploy("TaskAVSRegistrar", ["address"], [addr(avs)])
        block = self.transact(self.am, "setAVSRegistrar(address,address)", ["address", "address"],
                              [addr(avs), reg])
        return {"block": block, "registrar": reg}

    def test_setAvsConfig(self, registrar, aggregator_set, executor_sets):
        block = self.transact(addr(registrar), "setAvsConfig((uint32,uint32[]))", ["(uint32,uint32[])"],
                              [(qty(aggregator_set), [qty(x) for x in executor_sets])])
        return {"block": block}

    def test_configureOperatorSet(self, avs, set_id, curve):
        return {"block": self.transact(self.kr, f"configureOperatorSet({OPSET},uint8)", [OPSET, "uint8"],
                                       [(addr(avs), qty(set_id)), qty(curve)])}

    def test_registerKey(self, avs, set_id, operator, key_data):
        return {"block": self.transact(self.kr, f"registerKey(address,{OPSET},bytes)",
                                       ["address", OPSET, "bytes"],
                                       [addr(operator), (addr(avs), qty(set_id)), unhex(key_data)])}

    def test_deregisterKey(self, avs, set_id, operator):
        return {"block": self.transact(self.kr, f"deregisterKey(address,{OPSET})", ["address", OPSET],
                                       [addr(operator), (addr(avs), qty(set_id))])}

    def test_addToOperatorSet(self, operator, avs, set_id):
        return {"block": self.transact(self.am, f"addToOperatorSet(address,{OPSET})", ["address", OPSET],
                                       [addr(operator), (addr(avs), qty(set_id))])}

    def test_removeFromOperatorSet(self, operator, avs, set_id):
        return {"block": self.transact(self.am, f"removeFromOperatorSet(address,{OPSET})", ["address", OPSET],
                                       [addr(operator), (addr(avs), qty(set_id))])}

    def test_mine(self, n=1):
        self.et.mine_blocks(qty(n))
        return {"block": self.head()}

    def evm_snapshot(self):
        return hex(self.et.take_snapshot())

    def evm_revert(self, snap):
        # Later blocks get fresh hashes: py-evm draws a random mix_hash (prevrandao) per block.
        try:
            self.et.revert_to_snapshot(qty(snap))
        except SnapshotNotFound:
            raise RpcError(-32000, f"unknown snapshot {snap}") from None
        return True

    def test_counts(self):
        return dict(self.counts)

    def test_resetCounts(self):
        self.counts.clear()
        return True

    # ---------------------------------------------------------------- dispatch
    def handle(self, req):
        rid = req.get("id") if isinstance(req, dict) else None
        try:
            if not isinstance(req, dict) or not isinstance(req.get("method"), str):
                raise RpcError(-32600, "invalid request")
            m, params = req["method"], req.get("params") or []
            if not m.startswith(("test_", "evm_")):
                self.counts[m] += 1
            fn = getattr(self, m, None) if (m in STANDARD or m.startswith(("test_", "evm_"))) else None
            if fn is None:
                raise RpcError(-32601, f"the method {m} does not exist/is not available")
            try:
                result = fn(*params) if isinstance(params, list) else fn(**params)
            except (TypeError, ValueError, KeyError) as e:
                raise RpcError(-32602, f"invalid params: {e}") from None
            return {"jsonrpc": "2.0", "id": rid, "result": result}
        except RpcError as e:
            err = {"code": e.code, "message": e.message}
            if e.data is not None:
                err["data"] = e.data
            return {"jsonrpc": "2.0", "id": rid, "error": err}
        except Exception as e:  # noqa: BLE001 - a test server reports, never dies
            log(f"internal error in {req!r}: {e!r}")
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32603, "message": repr(e)}}


def make_handler(chain, lock):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: with Nagle's algorithm the body waits for the
        # client's delayed ACK (40 ms a call). A real node answers without that wait.
        disable_nagle_algorithm = True

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                req = json.loads(body)
            except ValueError:
                resp = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            else:
                with lock:  # one request or one whole batch at a time: a batch sees one head
                    if isinstance(req, list):
                        chain.counts["batches"] += 1
                        resp = [chain.handle(r) for r in req] if req else {
                            "jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "empty batch"}}
                    else:
                        resp = chain.handle(req)
            out = json.dumps(resp).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, fmt, *args):  # quiet
            pass

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    chain = Chain()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(chain, threading.Lock()))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(json.dumps({"url": f"http://{host}:{port}", "chain_id": chain.chain.chain_id,
                      "allocation_manager": chain.am, "key_registrar": chain.kr,
                      "ecdsa_verifier": chain.ecdsa, "verifier_version": chain.version}), flush=True)
    log(f"serving on {host}:{port}, head block {chain.head()}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
