var os = require("os");
var hostname = os.hostname();
console.log("hello from " + hostname);
