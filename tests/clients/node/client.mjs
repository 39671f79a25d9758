// The official openai npm client against a gateway: one scenario per run, its outcome printed as JSON for
// tests/gateway/test_node_client.py to check. Usage: node client.mjs SCENARIO (GATEWAY_URL, GATEWAY_KEY set).
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: `${process.env.GATEWAY_URL}/v1`,
  apiKey: process.env.GATEWAY_KEY,
  maxRetries: 0,
});

const scenarios = {
  async chat() {
    const reply = await client.chat.completions.create({
      model: "echo",
      messages: [{ role: "user", content: "hello from node" }],
    });
    return { text: reply.choices[0].message.content, usage: reply.usage };
  },
  async stream() {
    const stream = await client.chat.completions.create({
      model: "fixed",
      messages: [{ role: "user", content: "x" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage = chunk.usage ?? usage;
    }
    return { text, usage };
  },
  async embeddings() {
    // No encoding_format: the SDK asks for base64 and decodes it into floats itself.
    const reply = await client.embeddings.create({ model: "echo", input: ["alpha", "beta"] });
    return { model: reply.model, vectors: reply.data.map((d) => d.embedding) };
  },
  async completions() {
    const reply = await client.completions.create({ model: "echo", prompt: "complete me", max_tokens: 20 });
    return { object: reply.object, text: reply.choices[0].text };
  },
  async responses() {
    const response = await client.responses.create({
      model: "echo",
      instructions: "be brief",
      input: "hello from node responses",
    });
    const again = await client.responses.retrieve(response.id);
    return {
      id: response.id,
      text: response.output_text,
      status: response.status,
      usage: response.usage,
      retrieved: again.id,
    };
  },
  async responses_stream() {
    const stream = client.responses.stream({ model: "fixed", input: "x" });
    const types = [];
    for await (const event of stream) {
      types.push(event.type);
    }
    const final = await stream.finalResponse();
    // The stream's final response has no output_text convenience field: read the message items.
    const text = final.output
      .flatMap((item) => item.content ?? [])
      .map((part) => part.text ?? "")
      .join("");
    return { types, text, status: final.status };
  },
  async responses_parse() {
    const response = await client.responses.parse({
      model: "echo",
      input: "a city",
      text: {
        format: {
          type: "json_schema",
          name: "city",
          strict: true,
          schema: {
            type: "object",
            properties: { name: { type: "string" }, population: { type: "integer" } },
            required: ["name", "population"],
            additionalProperties: false,
          },
        },
      },
    });
    return { parsed: response.output_parsed };
  },
  async error() {
    try {
      await client.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] });
      return { status: null };
    } catch (error) {
      return { status: error.status, code: error.code, name: error.constructor.name };
    }
  },
};

const run = scenarios[process.argv[2]];
if (!run) {
  console.error(`unknown scenario ${process.argv[2]}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
console.log(JSON.stringify(await run()));
