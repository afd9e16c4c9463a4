# frozen_string_literal: true

require 'socket'

# A real HTTP server on 127.0.0.1 for probes of lifecycle scripts and shell helpers.
module HttpServer
  # Yields the port of a server answering every request with `status` and `{}`.
  def with_http_server(status)
    server = TCPServer.new('127.0.0.1', 0)
    thread = Thread.new do
      loop do
        client = server.accept
        nil while (line = client.gets) && line != "\r\n"
        client.write("HTTP/1.1 #{status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        client.close
      rescue IOError, Errno::EBADF
        break
      end
    end
    yield server.addr[1]
  ensure
    server&.close
    thread&.kill
  end

  # A 127.0.0.1 port nothing listens on (at the time of the call).
  def free_port
    s = TCPServer.new('127.0.0.1', 0)
    s.addr[1].tap { s.close }
  end
end
