#include "support/tsa.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>

namespace reduit::test {

namespace {

const char* kServer = R"py(
import http.server, os, subprocess, sys
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        q = self.rfile.read(int(self.headers['Content-Length']))
        if self.headers.get('Content-Type') != 'application/timestamp-query':
            self.send_error(415); return
        path = os.path.join(d, 'query.tsq')
        with open(path, 'wb') as f: f.write(q)
        r = subprocess.run(['openssl', 'ts', '-reply', '-config', os.path.join(d, 'tsa.cnf'),
                            '-queryfile', path, '-out', os.path.join(d, 'reply.tsr')], capture_output=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr.decode()); self.send_error(500); return
        body = open(os.path.join(d, 'reply.tsr'), 'rb').read()
        with open(os.path.join(d, 'count'), 'a') as f: f.write('x')
        self.send_response(200)
        self.send_header('Content-Type', 'application/timestamp-reply')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
with open(os.path.join(d, 'port.tmp'), 'w') as f: f.write(str(s.server_port))
os.rename(os.path.join(d, 'port.tmp'), os.path.join(d, 'port'))
s.serve_forever()
)py";

void sh(const std::string& dir, const std::string& script) {
  RunResult r = run_command({"/bin/sh", "-ec", "cd '" + dir + "' && " + script});
  if (r.status != 0) throw std::runtime_error("TSA setup failed: " + script + ": " + r.err);
}

}  // namespace

LocalTsa::LocalTsa() {
  const std::string d = dir_.path();
  sh(d,
     "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj '/CN=reduit test CA' -days "
     "3650 "
     "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null");
  sh(d,
     "openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -subj '/CN=other CA' "
     "-days 3650 -addext basicConstraints=critical,CA:TRUE 2>/dev/null");
  write_file(d + "/tsa-ext.cnf",
             "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
             "extendedKeyUsage=critical,timeStamping\n");
  sh(d,
     "openssl req -newkey rsa:2048 -nodes -keyout tsa.key -out tsa.csr -subj '/CN=reduit test TSA' "
     "2>/dev/null && "
     "openssl x509 -req -in tsa.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tsa.crt -days 3650 "
     "-extfile tsa-ext.cnf 2>/dev/null");
  write_file(d + "/tsaserial", "01\n");
  write_file(d + "/tsa.cnf",
             "[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\ndir = " + d +
                 "\nserial = $dir/tsaserial\ncrypto_device = builtin\nsigner_cert = $dir/tsa.crt\n"
                 "certs = $dir/ca.crt\nsigner_key = $dir/tsa.key\nsigner_digest = sha256\n"
                 "default_policy = 1.2.3.4.1\nother_policies = 1.2.3.4.5.6\ndigests = sha256\n"
                 "accuracy = secs:1\nordering = yes\ntsa_name = yes\ness_cert_id_chain = no\n"
                 "ess_cert_id_alg = sha256\n");
  write_file(d + "/server.py", kServer);
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execlp("python3", "python3", (d + "/server.py").c_str(), d.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 1000 && port_ == 0; ++i) {
    std::string p = read_file(d + "/port");
    if (!p.empty())
      port_ = std::stoi(p);
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (port_ == 0) throw std::runtime_error("the test TSA did not start");
}

LocalTsa::~LocalTsa() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

int LocalTsa::requests() const {
  return static_cast<int>(read_file(dir_.path() + "/count").size());
}

}  // namespace reduit::test
