#!/usr/bin/env python3
"""Self-test of the test chain: starts server.py, exercises every method, prints 'N passed, N failed'.

    VENV/bin/python tests/chain/selftest.py      (exit status 0 only when all checks pass)
"""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

from eth_abi import decode, encode
from eth_utils import keccak

HERE = os.path.dirname(os.path.abspath(__file__))
AVS = "0x" + "a1" * 20
OP1, OP2 = "0x" + "01" * 20, "0x" + "02" * 20
results = {"passed": 0, "failed": 0}


def check(name, cond, detail=""):
    results["passed" if cond else "failed"] += 1
    if not cond:
        print(f"FAIL {name} {detail}", flush=True)


def sel(sig):
    return keccak(text=sig)[:4]


def rpc_raw(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main():
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        print(f"start-up {time.monotonic() - t0:.2f}s ready line {json.dumps(ready)}", flush=True)
        run(ready)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


def run(ready):
    url = ready["url"]
    ids = iter(range(1, 10**9))

    def rpc(method, *params):
        r = rpc_raw(url, {"jsonrpc": "2.0", "id": next(ids), "method": method, "params": list(params)})
        if "error" in r:
            raise RuntimeError(r["error"])
        return r["result"]

    def call(to, sig, types=(), args=(), block="latest"):
        return bytes.fromhex(rpc("eth_call", {"to": to, "data": "0x" + (sel(sig) + encode(list(types), list(args))).hex()}, block)[2:])

    def call_err(to, data, block="latest"):
        return rpc_raw(url, {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"to": to, "data": data}, block]}).get("error")

    am, kr, ev = ready["allocation_manager"], ready["key_registrar"], ready["ecdsa_verifier"]
    check("ready keys", set(ready) == {"url", "chain_id", "allocation_manager", "key_registrar", "ecdsa_verifier", "verifier_version"})
    check("version", ready["verifier_version"] == "1.9.0")
    check("chainId", int(rpc("eth_chainId"), 16) == ready["chain_id"] and rpc("net_version") == str(ready["chain_id"]))
    head0 = int(rpc("eth_blockNumber"), 16)
    check("deployed 3 blocks", head0 == 3, head0)
    blk = rpc("eth_getBlockByNumber", "latest", False)
    check("block fields", int(blk["number"], 16) == head0 and abs(int(blk["timestamp"], 16) - time.time()) < 60)
    check("block by hash", rpc("eth_getBlockByHash", blk["hash"], False) == blk)
    check("parent", rpc("eth_getBlockByNumber", hex(head0 - 1), False)["hash"] == blk["parentHash"])
    check("block above head is null", rpc("eth_getBlockByNumber", hex(head0 + 5), False) is None)
    r = rpc_raw(url, {"jsonrpc": "2.0", "id": 9, "method": "nope", "params": []})
    check("unknown method", r["error"]["code"] == -32601 and r["id"] == 9)

    # domain separator and version
    ds = keccak(keccak(text="EIP712Domain(string name,string version,address verifyingContract)")
                + keccak(text="EigenLayer") + keccak(text="1") + encode(["address"], [ev]))
    check("domainSeparator", call(ev, "domainSeparator()") == ds)
    check("version()", decode(["string"], call(ev, "version()"))[0] == "1.9.0")

    # registrar + avs config, and a call at an older block
    check("registrar defaults to avs", decode(["address"], call(am, "getAVSRegistrar(address)", ["address"], [AVS]))[0] == AVS)
    before = int(rpc("eth_blockNumber"), 16)
    res = rpc("test_setAvsRegistrar", AVS)
    reg = res["registrar"]
    check("setAvsRegistrar block", res["block"] == before + 2, res)
    check("registrar latest", decode(["address"], call(am, "getAVSRegistrar(address)", ["address"], [AVS]))[0].lower() == reg.lower())
    check("registrar at older block", decode(["address"], call(am, "getAVSRegistrar(address)", ["address"], [AVS], hex(before)))[0] == AVS)
    check("registrar EIP-1898 number", decode(["address"], call(am, "getAVSRegistrar(address)", ["address"], [AVS], {"blockNumber": hex(before)}))[0] == AVS)
    bh = rpc("eth_getBlockByNumber", hex(before), False)["hash"]
    check("registrar EIP-1898 hash", decode(["address"], call(am, "getAVSRegistrar(address)", ["address"], [AVS], {"blockHash": bh}))[0] == AVS)
    check("config empty", decode(["(uint32,uint32[])"], call(reg, "getAvsConfig()"))[0] == (0, ()))
    cfg_block = rpc("test_setAvsConfig", reg, 7, ["0x1", 2])["block"]
    raw = call(reg, "getAvsConfig()")
    check("config layout is one tuple", raw[:32] == encode(["uint256"], [32]) and decode(["(uint32,uint32[])"], raw)[0] == (7, (1, 2)))

    # keys
    k1 = rpc("test_configureOperatorSet", AVS, 1, 1)["block"]
    rpc("test_configureOperatorSet", AVS, 2, 2)
    check("curve types", [decode(["uint8"], call(kr, "getOperatorSetCurveType((address,uint32))", ["(address,uint32)"], [(AVS, i)]))[0] for i in (1, 2, 3)] == [1, 2, 0])
    reg_block = rpc("test_registerKey", AVS, 1, OP1, OP1)["block"]
    s1 = (AVS, 1)
    check("ecdsa key", decode(["address"], call(kr, "getECDSAAddress((address,uint32),address)", ["(address,uint32)", "address"], [s1, OP1]))[0] == OP1)
    check("ecdsa key unregistered is zero", decode(["address"], call(kr, "getECDSAAddress((address,uint32),address)", ["(address,uint32)", "address"], [s1, OP2]))[0] == "0x" + "00" * 20)
    check("isRegistered", decode(["bool"], call(kr, "isRegistered((address,uint32),address)", ["(address,uint32)", "address"], [s1, OP1]))[0] is True)
    err = call_err(kr, "0x" + (sel("getBN254Key((address,uint32),address)") + encode(["(address,uint32)", "address"], [s1, OP1])).hex())
    check("bn254 on ecdsa set reverts", err and err["code"] == 3 and err["message"] == "execution reverted" and err["data"] == "0x" + sel("InvalidCurveType()").hex(), err)
    words = [11, 12, 21, 22, 31, 32]
    rpc("test_registerKey", AVS, 2, OP2, "0x" + encode(["uint256"] * 6, words).hex())
    g = decode(["(uint256,uint256)", "(uint256[2],uint256[2])"], call(kr, "getBN254Key((address,uint32),address)", ["(address,uint32)", "address"], [(AVS, 2), OP2]))
    check("bn254 key", g == ((11, 12), ((21, 22), (31, 32))), g)
    g0 = decode(["(uint256,uint256)", "(uint256[2],uint256[2])"], call(kr, "getBN254Key((address,uint32),address)", ["(address,uint32)", "address"], [(AVS, 2), OP1]))
    check("bn254 unregistered zeros", g0 == ((0, 0), ((0, 0), (0, 0))))
    dereg_block = rpc("test_deregisterKey", AVS, 1, OP1)["block"]
    check("deregistered", decode(["bool"], call(kr, "isRegistered((address,uint32),address)", ["(address,uint32)", "address"], [s1, OP1]))[0] is False)
    check("still registered at older block", decode(["bool"], call(kr, "isRegistered((address,uint32),address)", ["(address,uint32)", "address"], [s1, OP1], hex(dereg_block - 1)))[0] is True)

    # membership
    add_block = rpc("test_addToOperatorSet", OP1, AVS, 1)["block"]
    rpc("test_addToOperatorSet", OP1, AVS, 5)
    member = lambda sid, b="latest": decode(["bool"], call(am, "isMemberOfOperatorSet(address,(address,uint32))", ["address", "(address,uint32)"], [OP1, (AVS, sid)], b))[0]
    sets = lambda: decode(["(address,uint32)[]"], call(am, "getRegisteredSets(address)", ["address"], [OP1]))[0]
    check("member", member(1) and member(5) and not member(2))
    check("registered sets", sets() == ((AVS, 1), (AVS, 5)), sets())
    rm_block = rpc("test_removeFromOperatorSet", OP1, AVS, 1)["block"]
    check("removed", not member(1) and sets() == ((AVS, 5),) and member(1, hex(rm_block - 1)))
    err = call_err(am, "0x1234")
    check("unknown selector reverts with empty data", err and err["code"] == 3 and err["data"] == "0x", err)
    err = call_err(am, "0x" + sel("getAVSRegistrar(address)").hex() + "00" * 32, hex(10**6))
    check("call above head is an error", err and err["code"] != 3, err)
    err = call_err(am, "0x", {"blockHash": "0x" + "ab" * 32})
    check("call at unknown hash is an error", err is not None, err)

    # logs
    topic = lambda sig: "0x" + keccak(text=sig).hex()
    T_ADD = topic("OperatorAddedToOperatorSet(address,(address,uint32))")
    T_RM = topic("OperatorRemovedFromOperatorSet(address,(address,uint32))")
    T_KEY = topic("KeyRegistered((address,uint32),address,uint8,bytes)")
    logs = rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": am, "topics": [[T_ADD, T_RM]]})
    check("membership logs", [l["topics"][0] for l in logs] == [T_ADD, T_ADD, T_RM] and int(logs[0]["blockNumber"], 16) == add_block, logs)
    l0 = logs[0]
    check("log fields", l0["removed"] is False and l0["logIndex"] == "0x0" and l0["transactionIndex"] == "0x0"
          and decode(["(address,uint32)"], bytes.fromhex(l0["data"][2:]))[0] == (AVS, 1)
          and l0["topics"][1] == "0x" + "00" * 12 + OP1[2:])
    check("blockHash filter", rpc("eth_getLogs", {"blockHash": l0["blockHash"]}) == [l0])
    check("topic null + indexed operator", len(rpc("eth_getLogs", {"fromBlock": "earliest", "topics": [None, "0x" + "00" * 12 + OP2[2:]]})) == 1)
    check("range excludes", rpc("eth_getLogs", {"fromBlock": hex(add_block + 1), "toBlock": hex(rm_block - 1), "address": [am]}) != [] and
          rpc("eth_getLogs", {"fromBlock": hex(rm_block + 1), "address": am}) == [])
    kl = rpc("eth_getLogs", {"fromBlock": hex(reg_block), "toBlock": hex(reg_block), "address": [am, kr], "topics": [T_KEY]})
    check("KeyRegistered log", len(kl) == 1 and decode(["(address,uint32)", "uint8", "bytes"], bytes.fromhex(kl[0]["data"][2:])) == ((AVS, 1), 1, bytes.fromhex(OP1[2:])), kl)
    all_topics = {l["topics"][0] for l in rpc("eth_getLogs", {"fromBlock": "0x0"})}
    check("all event kinds seen", all_topics == {T_ADD, T_RM, T_KEY, topic("AVSRegistrarSet(address,address)"), topic("AvsConfigSet(uint32,uint32[])"),
          topic("KeyDeregistered((address,uint32),address,uint8)"), topic("OperatorSetConfigured((address,uint32),uint8)")}, all_topics)

    # batches and counts
    rpc("test_resetCounts")
    data = "0x" + (sel("getAVSRegistrar(address)") + encode(["address"], [AVS])).hex()
    batch = rpc_raw(url, [{"jsonrpc": "2.0", "id": i, "method": "eth_call", "params": [{"to": am, "data": data}, hex(cfg_block - 2)]} for i in range(3)]
                    + [{"jsonrpc": "2.0", "id": "n", "method": "eth_blockNumber", "params": []}])
    check("batch", [r["id"] for r in batch] == [0, 1, 2, "n"] and all(decode(["address"], bytes.fromhex(r["result"][2:]))[0] == AVS for r in batch[:3]), batch)
    c = rpc("test_counts")
    check("counts", c == {"batches": 1, "eth_call": 3, "eth_blockNumber": 1, f"eth_call:{am.lower()}:0x304c10cd": 3}, c)

    # snapshot / revert as a reorg
    snap = rpc("evm_snapshot")
    h = int(rpc("eth_blockNumber"), 16)
    rpc("test_addToOperatorSet", OP1, AVS, 9)
    rpc("test_mine", 2)
    orphan = [rpc("eth_getBlockByNumber", hex(n), False)["hash"] for n in range(h + 1, h + 4)]
    check("member before revert", member(9))
    check("revert", rpc("evm_revert", snap) is True and int(rpc("eth_blockNumber"), 16) == h)
    check("orphan gone", rpc("eth_getBlockByHash", orphan[0], False) is None and not member(9))
    rpc("test_mine", 3)
    fresh = [rpc("eth_getBlockByNumber", hex(n), False)["hash"] for n in range(h + 1, h + 4)]
    check("new blocks differ", all(a != b for a, b in zip(orphan, fresh)))
    check("logs by orphan hash error", "error" in rpc_raw(url, {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{"blockHash": orphan[0]}]}))

    # a few concurrent clients
    errs = []
    def worker():
        for _ in range(20):
            try:
                call(am, "getAVSRegistrar(address)", ["address"], [AVS])
            except Exception as e:  # noqa: BLE001
                errs.append(e)
    ts = [threading.Thread(target=worker) for _ in range(4)]
    t = time.monotonic()
    [x.start() for x in ts]
    [x.join() for x in ts]
    print(f"80 concurrent eth_call in {time.monotonic() - t:.2f}s", flush=True)
    check("concurrent calls", not errs, errs[:1])


if __name__ == "__main__":
    main()
