// The Node.js peer of `make bench`: what a team that does not pick Python writes instead.
// Fastify 5 + amqplib ConfirmChannel, one process: check the bearer token's SHA-256 digest in
// constant time, publish the raw body (persistent, to a topic exchange, routing key = the
// CloudEvent type read from the body), answer 204 only after the broker's ack, 503 on nack.
// Usage: node server.js --port P --amqp-url URL --exchange NAME --token-digest sha256:<hex>
"use strict";
const crypto = require("node:crypto");
const amqp = require("amqplib");
const fastify = require("fastify");

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`--${name} is required`);
  return process.argv[i + 1];
}

async function main() {
  const port = Number(arg("port"));
  const exchange = arg("exchange");
  const digest = Buffer.from(arg("token-digest").replace(/^sha256:/, ""), "hex");
  const connection = await amqp.connect(arg("amqp-url"));
  const channel = await connection.createConfirmChannel();
  await channel.assertExchange(exchange, "topic", { durable: true });

  const app = fastify({ logger: false, bodyLimit: 262144 });
  app.addContentTypeParser(
    ["application/cloudevents+json", "application/json"],
    { parseAs: "buffer" },
    (_req, body, done) => done(null, body),
  );
  app.get("/readyz", async () => "ok");
  app.post("/callbacks/:source", (request, reply) => {
    const header = request.headers.authorization || "";
    const token = header.startsWith("Bearer ") ? header.slice(7) : "";
    const seen = crypto.createHash("sha256").update(token).digest();
    if (!crypto.timingSafeEqual(seen, digest)) {
      reply.code(401).send();
      return;
    }
    let type;
    try {
      type = JSON.parse(request.body).type;
    } catch {
      reply.code(400).send();
      return;
    }
    if (typeof type !== "string") {
      reply.code(400).send();
      return;
    }
    channel.publish(
      exchange,
      type,
      request.body,
      { persistent: true, contentType: "application/cloudevents+json", timestamp: Date.now() },
      (err) => reply.code(err ? 503 : 204).send(),
    );
  });
  await app.listen({ host: "127.0.0.1", port });
  const stop = async () => {
    await app.close();
    await channel.close();
    await connection.close();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
