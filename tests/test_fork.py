"""Codecs, engines and remote codecs in processes forked from the one that made them
(multiprocessing's default start method on Linux, gunicorn --preload): each either works or
says why, never hangs. Every case runs in a script of its own (a fresh interpreter forking),
each child with a deadline."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork() on this platform")

PRELUDE = textwrap.dedent("""
    import multiprocessing as mp, os, sys, warnings
    import numpy as np
    import torch
    import vlmcodec
    from vlmcodec import Codec
    img = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)

    def in_child(fn, *args):
        # fn's result from a forked child, or 'HUNG' past the deadline
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=lambda: q.put(fn(*args)))
        p.start()
        p.join(90)
        if p.is_alive():
            p.kill()
            return "HUNG"
        return q.get(timeout=5)

    def in_child_while_held(lock, fn):
        # in_child(fn), forked while another thread of this process holds lock
        import threading
        held, release = threading.Event(), threading.Event()

        def hold():
            with lock:
                held.set()
                release.wait()

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait()
        try:
            return in_child(fn)
        finally:
            release.set()
            holder.join()
""")


def run_script(body: str) -> list[str]:
    run = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], capture_output=True, text=True,
                         timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.split("\n")


@pytest.mark.parametrize("parent_threads", [2, 1])
def test_a_codec_works_in_a_child_forked_after_it_ran(parent_threads):
    """torch's OpenMP threads cannot start again in a child forked after they ran (its first
    parallel region hung for good): there torch runs on one thread, the inherited codec and a new
    one give the parent's bytes, and the new one's request for two threads is answered with a
    warning. A parent whose codecs use threads=1 never ran them, and its child keeps its threads:
    Codec(threads=1) sets them before it loads its model (it loaded on torch's default threads)."""
    out = run_script(f"""
        torch.set_num_threads(2)
        codec = Codec(threads={parent_threads})
        ref = codec.encode(img, 50)

        def child():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fresh = Codec(threads=2)
                same = codec.encode(img, 50) == ref and fresh.encode(img, 50) == ref
                threads = torch.get_num_threads()  # (fresh's calls ran on these; codec's run on its own)
                decoded = codec.decode(ref).shape == img.shape
            return (same, decoded, threads, [str(w.message) for w in caught])

        print(repr(in_child(child)))
        print(codec.encode(img, 50) == ref, torch.get_num_threads())
    """)
    same, decoded, threads, warned = eval(out[0])
    if parent_threads == 1:
        assert (same, decoded, threads, warned) == (True, True, 2, [])
        return
    assert (same, decoded, threads) == (True, True, 1)
    assert len(warned) == 1 and "forked" in warned[0] and "not 2" in warned[0] and "spawn" in warned[0]
    assert out[1] == "True 2"  # the parent keeps its threads


def test_a_child_forked_after_the_application_raised_torchs_threads_works():
    """Codec(threads=1), then the application's torch.set_num_threads(2) and an encode: the
    threads ran, though no codec set them; the child forked after hung in its first encode."""
    out = run_script("""
        codec = Codec(threads=1)
        torch.set_num_threads(2)
        ref = codec.encode(img, 50)
        print(repr(in_child(lambda: (codec.encode(img, 50) == ref, torch.get_num_threads()))))
    """)
    assert eval(out[0]) == (True, 1)


def test_a_child_forked_before_any_torch_work_keeps_its_threads():
    out = run_script("""
        torch.set_num_threads(2)
        print(in_child(torch.get_num_threads))
        Codec(threads=2)
        print(in_child(torch.get_num_threads))
    """)
    assert out[:2] == ["2", "1"]


def test_an_engine_used_in_a_forked_child_says_it_has_no_threads_there():
    """Its threads live in the parent alone: a request from the child waited for ever; now it is
    refused with EngineDeadError naming both processes. The parent's engine works on."""
    out = run_script("""
        from vlmcodec.runtime import Engine
        from vlmcodec.runtime.engine import EngineDeadError
        engine = Engine(Codec(threads=1))
        ref = engine.submit_encode(img, 50).result()

        def child():
            try:
                engine.submit_encode(img, 50).result(timeout=60)
                return "answered"
            except EngineDeadError as e:
                engine.shutdown()  # (a no-op there: the parent's engine is not touched)
                return str(e)

        print(in_child(child))
        print(engine.submit_encode(img, 50).result() == ref)
        engine.shutdown()
    """)
    assert "was forked from it" in out[0] and str(out[0]).startswith("this Engine was started in process")
    assert out[1] == "True"


def test_a_remote_codec_used_in_forked_children_opens_their_own_connections():
    """The parent's kept-alive socket is inherited: children sharing it read each other's
    answers (they hung). Three children at once and the parent after them all get theirs."""
    out = run_script("""
        from vlmcodec.runtime import Engine, RemoteCodec
        from vlmcodec.runtime.server import running_server
        with running_server(Engine(Codec(threads=1)), port=0) as server:
            remote = RemoteCodec(server.url)
            ref = remote.encode(img, 50)

            def child(i):
                sizes = [(64 + 8 * i, 96 - 8 * i)] * 4
                got = [remote.decode(remote.encode(np.zeros((h, w, 3), np.uint8) + i, 50)).shape[:2] for h, w in sizes]
                return got == sizes

            ctx = mp.get_context("fork")
            with ctx.Pool(3) as pool:
                result = pool.map_async(child, range(3))
                print(result.get(timeout=120))
            print(remote.encode(img, 50) == ref)
            remote.close()
    """)
    assert out[:2] == ["[True, True, True]", "True"]


def test_module_calls_work_in_a_child_forked_while_another_thread_held_their_lock():
    """vlmcodec.encode's codec cache is guarded by a lock; a child forked while another thread
    of the parent held it waited on it for ever (the holder is not in the child)."""
    out = run_script("""
        vlmcodec.encode(img, 50)
        print(in_child_while_held(vlmcodec._codecs_lock, lambda: len(vlmcodec.encode(img, 50)) > 0))
    """)
    assert out[0] == "True"


def test_a_forked_child_that_exits_normally_leaves_the_parents_server_alone():
    """A bare os.fork() child ending through sys.exit runs the exit handlers: stopping a server
    serve_in_thread started in the parent waited there for ever for a loop that runs in the
    parent. The child ends; the parent's server still answers."""
    out = run_script("""
        import signal
        from vlmcodec.runtime import Engine, RemoteCodec
        from vlmcodec.runtime.server import CodecServer, serve_in_thread
        server = CodecServer(Engine(Codec(threads=1)), port=0)
        serve_in_thread(server)
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)  # (a hang ends the child with SIGALRM, not 0)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        print(len(RemoteCodec(server.url).encode(img, 50)) > 0)
        server.shutdown()
        server.server_close()
    """)
    assert out[:2] == ["0", "True"]


def test_a_refined_encode_works_in_a_child_forked_while_the_refiner_was_being_made():
    """The codec makes its refiner (the teacher) once, under a lock; a child forked while another
    thread of the parent held it waited on it for ever."""
    out = run_script("""
        codec = Codec(threads=1, refine=1)
        small = img[:32, :32]
        ref = codec.encode(small, 50)
        print(in_child_while_held(codec._refiner_lock, lambda: codec.encode(small, 50) == ref))
    """)
    assert out[0] == "True"
