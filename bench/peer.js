// The peer of issue 7: the official client (replicate@1.4.0) doing the same
// work as predictd, predictions.create + wait, against predictd-sim.
// Prints one JSON object on stdout. The simulator's CA comes through
// NODE_EXTRA_CA_CERTS.
//
//   node peer.js throughput BASE TOKEN JOBS CONCURRENCY INTERVAL_MS
//   node peer.js jobs BASE TOKEN JOBS_FILE INTERVAL_MS   (one worker per job)
const fs = require("node:fs");
const Replicate = require("replicate");

async function runOne(replicate, job, interval) {
  const created = await replicate.predictions.create(job);
  try {
    const done = await replicate.wait(created, { interval });
    return { id: done.id, status: done.status, completed_at: done.completed_at, done_ms: Date.now() };
  } catch (e) {
    // wait() throws on `failed`; the job still ended.
    return { id: created.id, status: "failed", error: String(e.message), done_ms: Date.now() };
  }
}

async function throughput(replicate, jobs, concurrency, interval) {
  let next = 0;
  const counts = { succeeded: 0, failed: 0, other: 0 };
  const worker = async () => {
    while (next < jobs) {
      const i = next++;
      const r = await runOne(replicate, { model: "black-forest-labs/flux-schnell", input: { prompt: `peer ${i}` } },
        interval);
      if (r.status === "succeeded") counts.succeeded++;
      else if (r.status === "failed") counts.failed++;
      else counts.other++;
    }
  };
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs) }, worker));
  const wall_s = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { wall_s, cpu_s: (cpu.user + cpu.system) / 1e6, ...counts };
}

async function main() {
  const [mode, base, token] = process.argv.slice(2, 5);
  const replicate = new Replicate({ auth: token, baseUrl: `${base}/v1` });
  let result;
  if (mode === "throughput") {
    const [jobs, concurrency, interval] = process.argv.slice(5, 8).map(Number);
    result = await throughput(replicate, jobs, concurrency, interval);
  } else if (mode === "jobs") {
    const jobs = JSON.parse(fs.readFileSync(process.argv[5], "utf8"));
    const interval = Number(process.argv[6]);
    const results = await Promise.all(jobs.map((j) => runOne(replicate, j, interval)));
    result = { results: results.map((r, i) => ({ ...r, model: jobs[i].model })) };
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((e) => {
  process.stderr.write(`peer: ${e.stack || e}${e.cause ? `\ncause: ${e.cause.stack || e.cause}` : ""}\n`);
  process.exit(1);
});
