// The official JavaScript client (replicate@1.4.0) against predictd-sim:
// predictions.create + wait, in the model form and the version form.
const test = require("node:test");
const assert = require("node:assert");
const { spawn } = require("node:child_process");
const Replicate = require("replicate");

function startSim() {
  return new Promise((resolve, reject) => {
    const sim = spawn(process.env.SIM_BIN, ["--listen", "127.0.0.1:0", "--profile", "realistic",
      "--time-scale", "20", "--cold-start-rate", "0", "--failure-rate", "0", "--token", "js-token"]);
    let out = "";
    sim.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on .*:(\d+)/);
      if (m) resolve({ sim, port: Number(m[1]) });
    });
    sim.on("error", reject);
    sim.on("exit", (code) => reject(new Error(`predictd-sim exited with ${code}`)));
  });
}

test("replicate@1.4.0 runs create + wait to succeeded on predictd-sim", async () => {
  const { sim, port } = await startSim();
  try {
    const replicate = new Replicate({ auth: "js-token", baseUrl: `http://127.0.0.1:${port}/v1` });

    const byModel = await replicate.predictions.create({
      model: "black-forest-labs/flux-schnell",
      input: { prompt: "an anime cat", num_outputs: 2 },
    });
    const doneModel = await replicate.wait(byModel, { interval: 100 });
    assert.strictEqual(doneModel.status, "succeeded");
    assert.strictEqual(doneModel.output.length, 2);

    const byVersion = await replicate.predictions.create({
      version: "2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574",
      input: { prompt: "a cat", hf_lora: "alvdansen/frosting_lane_flux" },
    });
    const doneVersion = await replicate.wait(byVersion, { interval: 100 });
    assert.strictEqual(doneVersion.status, "succeeded");
    assert.strictEqual(doneVersion.model, "lucataco/flux-schnell-lora");

    const stats = await (await fetch(`http://127.0.0.1:${port}/_sim/stats`)).json();
    assert.strictEqual(stats.creates, 2);
  } finally {
    sim.kill("SIGTERM");
  }
});
