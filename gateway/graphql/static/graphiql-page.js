// The gateway's GraphiQL page (gateway/graphql/ide.py): no inline script, so the page's Content-Security-Policy
// can allow scripts from this origin only. Queries are POSTs to /graphql; subscriptions use its WebSocket.
// The key goes in the Headers tab ({"Authorization": "Bearer <key>"}); it is not kept in the browser's
// storage (shouldPersistHeaders: false), so closing the tab forgets it.
(function () {
  "use strict";
  // This page is served at the GraphQL endpoint itself (GET shows the page, POST runs queries).
  var endpoint = new URL(window.location.href);
  endpoint.search = "";
  endpoint.hash = "";
  var socket = new URL(endpoint.href);
  socket.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";
  var send = GraphiQL.createFetcher({ url: endpoint.href, subscriptionUrl: socket.href });
  var keyHeaders = ["authorization", "x-api-key", "api-key"];

  // Without a key every operation is a 401 (the schema's introspection on load too): say what to do
  // instead of sending it.
  function fetcher(params, options) {
    var headers = (options && options.headers) || {};
    var keyed = Object.keys(headers).some(function (name) {
      return keyHeaders.indexOf(name.toLowerCase()) >= 0;
    });
    if (!keyed) {
      return Promise.resolve({
        errors: [
          {
            message:
              'Set your key in the Headers tab: {"Authorization": "Bearer <key>"}; then run the query ' +
              "(and re-fetch the schema, if introspection is on).",
          },
        ],
      });
    }
    return send(params, options);
  }

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      inputValueDeprecation: true,
    })
  );
})();
