// The official JavaScript client (replicate@1.4.0) against predictd-sim:
// predictions.create + wait in the model form and the version form, run()
// (which sends Prefer: wait), cancel, and the client's own 429 retries.
const test = require("node:test");
const assert = require("node:assert");
const { spawn } = require("node:child_process");
const Replicate = require("replicate");

const TOKEN = "js-token";

function startSim(args) {
  return new Promise((resolve, reject) => {
    const sim = spawn(process.env.SIM_BIN, ["--listen", "127.0.0.1:0", "--token", TOKEN, ...args],
      { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    sim.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/^listening on 127\.0\.0\.1:(\d+)$/m);
      if (m) resolve({ sim, base: `http://127.0.0.1:${m[1]}` });
    });
    sim.on("error", reject);
    sim.on("exit", (code) => reject(new Error(`predictd-sim exited with ${code}`)));
  });
}

async function withSim(args, body) {
  const { sim, base } = await startSim(args);
  const exited = new Promise((resolve) => sim.on("exit", (code, signal) => resolve({ code, signal })));
  try {
    await body(base);
  } finally {
    sim.kill("SIGTERM");
    const { code } = await exited;
    assert.strictEqual(code, 0, "predictd-sim exits 0 on SIGTERM");
  }
}

const stats = async (base) => (await fetch(`${base}/_sim/stats`)).json();
const control = async (base, body) =>
  fetch(`${base}/_sim/control`, { method: "POST", body: JSON.stringify(body) });

test("replicate@1.4.0 runs create + wait to succeeded on predictd-sim", async () => {
  await withSim(["--profile", "realistic", "--time-scale", "20", "--cold-start-rate", "0", "--failure-rate", "0"],
    async (base) => {
      const replicate = new Replicate({ auth: TOKEN, baseUrl: `${base}/v1` });

      const byModel = await replicate.predictions.create({
        model: "black-forest-labs/flux-schnell",
        input: { prompt: "an anime cat", num_outputs: 2 },
      });
      assert.strictEqual(byModel.status, "starting");
      const doneModel = await replicate.wait(byModel, { interval: 100 });
      assert.strictEqual(doneModel.status, "succeeded");
      assert.strictEqual(doneModel.output.length, 2);
      assert.match(doneModel.output[0], /^https:\/\/replicate\.delivery\/.*\.webp$/);

      const byVersion = await replicate.predictions.create({
        version: "2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574",
        input: { prompt: "a cat", hf_lora: "alvdansen/frosting_lane_flux" },
      });
      const doneVersion = await replicate.wait(byVersion, { interval: 100 });
      assert.strictEqual(doneVersion.status, "succeeded");
      assert.strictEqual(doneVersion.model, "lucataco/flux-schnell-lora");

      // run(): Prefer: wait, then the output as plain URLs.
      const runner = new Replicate({ auth: TOKEN, baseUrl: `${base}/v1`, useFileOutput: false });
      const sdxl = await runner.run(
        "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",
        { input: { prompt: "a lighthouse" } });
      assert.ok(Array.isArray(sdxl) && sdxl[0].endsWith(".png"), JSON.stringify(sdxl));
      const recraft = await runner.run("recraft-ai/recraft-v3-svg", { input: { prompt: "a logo" } });
      assert.match(recraft, /\.svg$/);

      const video = await replicate.predictions.create({ model: "minimax/video-01", input: { prompt: "waves" } });
      const canceled = await replicate.predictions.cancel(video.id);
      assert.strictEqual(canceled.status, "canceled");

      const s = await stats(base);
      assert.strictEqual(s.creates, 5);
      assert.strictEqual(s.duplicate_creates, 0);
      assert.strictEqual(s.cancels, 1);
    });
});

test("replicate@1.4.0 retries the simulator's 429s and still succeeds", async () => {
  await withSim(["--profile", "instant", "--seed", "3"], async (base) => {
    await control(base, { faults: { throttle: 0.3, retry_after_s: 1 } });
    const replicate = new Replicate({ auth: TOKEN, baseUrl: `${base}/v1` });
    for (let i = 0; i < 3; i++) {
      const p = await replicate.predictions.create({ model: "black-forest-labs/flux-dev", input: { i } });
      const done = await replicate.wait(p, { interval: 50 });
      assert.strictEqual(done.status, "succeeded");
    }
    const s = await stats(base);
    assert.strictEqual(s.creates, 3);
    assert.ok(s.faults.throttle >= 1, JSON.stringify(s.faults));
  });
});
