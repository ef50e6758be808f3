// One scenario of fal's official JavaScript client (@fal-ai/client) against the fake fal.
// Usage: node scenario.mjs NAME FAKE_URL; prints what the client saw as one JSON object.
// The client is pointed at the fake by a URL rewrite in its `fetch`, nothing else.
import { createFalClient } from "@fal-ai/client";

const [name, fake] = process.argv.slice(2);
const MODEL = "imagineart/imagineart-2.0-preview/text-to-image";
const INPUT = { prompt: "a red fox in snow", aspect_ratio: "16:9", resolution: "1K", seed: 7 };

// fal's hosts, as the fake serves them on its one port.
const HOSTS = [
  ["https://queue.fal.run/", `${fake}/`],
  ["https://fal.run/", `${fake}/run/`],
  ["https://rest.fal.ai/", `${fake}/`],
  ["https://v3.fal.media/", `${fake}/`],
];
const rewrite = (url) => {
  for (const [from, to] of HOSTS) {
    if (url.startsWith(from)) return to + url.slice(from.length);
  }
  return url;
};
const fetchViaFake = (input, init) =>
  fetch(rewrite(typeof input === "string" ? input : input.url), init);

const fal = createFalClient({ credentials: "test-key", fetch: fetchViaFake });

async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return { name: error.name, status: error.status, body: error.body ?? null };
  }
  return null;
}

const scenarios = {
  async run() {
    const result = await fal.run(MODEL, { input: INPUT });
    const error = await failure(fal.run(MODEL, { input: { prompt: "" } }));
    const unknown = await failure(fal.run("nobody/nothing", { input: INPUT }));
    return { result, error, unknown };
  },

  async stream() {
    const stream = await fal.stream(MODEL, { input: INPUT });
    const events = [];
    for await (const event of stream) events.push(event);
    const done = await stream.done();
    return { events, done, requestId: stream.requestId };
  },

  async subscribePolling() {
    const updates = [];
    const result = await fal.subscribe(MODEL, {
      input: INPUT,
      logs: true,
      pollInterval: 50,
      onQueueUpdate: (update) => updates.push(update),
    });
    return { result, updates };
  },

  async subscribeStreaming() {
    const updates = [];
    const result = await fal.subscribe(MODEL, {
      input: INPUT,
      logs: true,
      mode: "streaming",
      onQueueUpdate: (update) => updates.push(update),
    });
    return { result, updates };
  },

  async queue() {
    const submitted = await fal.queue.submit(MODEL, {
      input: INPUT,
      priority: "low",
      startTimeout: 30,
    });
    const requestId = submitted.request_id;
    const first = await fal.queue.status(MODEL, { requestId, logs: true });
    const completed = await fal.queue.subscribeToStatus(MODEL, { requestId, pollInterval: 50 });
    const result = await fal.queue.result(MODEL, { requestId });
    return { submitted, first, completed, result };
  },

  async cancel() {
    const { request_id: requestId } = await fal.queue.submit(MODEL, { input: INPUT });
    await fal.queue.cancel(MODEL, { requestId });
    const status = await fal.queue.status(MODEL, { requestId });
    const result = await failure(fal.queue.result(MODEL, { requestId }));
    const again = await failure(fal.queue.cancel(MODEL, { requestId }));
    return { status, result, again };
  },

  async upload() {
    const sizes = { small: 200_000, multipart: 91 * 1024 * 1024 }; // past 90 MB: multipart
    const out = {};
    for (const [label, size] of Object.entries(sizes)) {
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i += 65536) {
        crypto.getRandomValues(bytes.subarray(i, Math.min(i + 65536, size)));
      }
      const url = await fal.storage.upload(new Blob([bytes], { type: "image/png" }));
      const served = await fetch(url);
      const back = new Uint8Array(await served.arrayBuffer());
      out[label] = {
        url,
        contentType: served.headers.get("content-type"),
        same: Buffer.from(back).equals(Buffer.from(bytes)),
      };
    }
    return out;
  },
};

const result = await scenarios[name]();
process.stdout.write(JSON.stringify(result));
