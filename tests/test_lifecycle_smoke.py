from harness import wait_for


def test_sample_flow(ws):
    ws.start()
    ws.drop_case("alpha")
    row = ws.wait_state("alpha", "success")
    assert row.reason is None
    assert [t for _, _, t in ws.history("alpha")] == [
        "detect", "stabilize", "enqueue", "lock_gpu", "upload", "submit", "complete"]
    env = (ws.remote / f"{row.id}-alpha" / "job_env.txt").read_text()
    assert "CASEFLOW_GPU_GROUP=gpu_a" in env
    assert "CUDA_VISIBLE_DEVICES=0" in env
