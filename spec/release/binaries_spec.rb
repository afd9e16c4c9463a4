# frozen_string_literal: true

require 'open3'
require 'tmpdir'

# The config files the job templates render are accepted by the real binaries: each runs against
# its rendered config and must get past config parsing (upstream-compatible binaries exit 64 on a
# config they reject, before opening a socket). Binaries are built from the workspace; ones whose
# crate does not exist yet are listed as pending. The daemon runs in a network namespace of its own
# (`unshare -n`), so whatever it tries after parsing stays there.
module BoshTemplate
  RSpec.describe 'rendered configs against the real binaries' do
    SRC = File.join(RELEASE_DIR, 'src')

    def self.workspace_bins
      @workspace_bins ||= begin
        out, err, status = Open3.capture3('cargo', 'metadata', '--offline', '--no-deps', '--format-version', '1', chdir: SRC)
        raise "cargo metadata failed: #{err}" unless status.success?

        JSON.parse(out)['packages'].flat_map { |p| p['targets'] }.select { |t| t['kind'].include?('bin') }.map { |t| t['name'] }
      end
    end

    def binary(name)
      _out, err, status = Open3.capture3('cargo', 'build', '--quiet', '--bin', name, chdir: SRC)
      raise "cargo build --bin #{name} failed:\n#{err}" unless status.success?

      File.join(ENV.fetch('CARGO_TARGET_DIR', File.join(SRC, 'target')), 'debug', name)
    end

    def run_with_config(command, text, wrap: [])
      Dir.mktmpdir do |dir|
        path = File.join(dir, 'config.json')
        File.write(path, text)
        Open3.capture3(*wrap, 'timeout', '--kill-after=2', '3', *command.call(path))
      end
    end

    let(:controller_props) do
      { 'ca_cert' => 'CA', 'server_cert' => 'C', 'server_key' => 'K', 'network' => ['10.255.0.0/20', '10.254.0.0/20'],
        'database' => { 'type' => 'postgres', 'username' => 'u', 'password' => 'p', 'host' => '127.0.0.1', 'port' => 1,
                        'name' => 'n', 'require_ssl' => true, 'connect_timeout_seconds' => 1 } }
    end

    it 'silk-controller accepts silk-controller.json' do
      skip 'no silk-controller binary in the workspace yet' unless self.class.workspace_bins.include?('silk-controller')

      bin = binary('silk-controller')
      text = release.job('silk-controller').template('config/silk-controller.json').render(controller_props)
      _out, err, status = run_with_config(->(path) { [bin, "-config=#{path}"] }, text)
      expect(status.exitstatus).not_to eq(64), "config rejected: #{err}"
      # Got as far as reading the certificate files the config names.
      expect(err).to include('/var/vcap/jobs/silk-controller/config/certs/')
    end

    it 'silk-controller rejects a config with an unknown key (so the check above can fail)' do
      skip 'no silk-controller binary in the workspace yet' unless self.class.workspace_bins.include?('silk-controller')

      bin = binary('silk-controller')
      config = JSON.parse(release.job('silk-controller').template('config/silk-controller.json').render(controller_props))
      _out, _err, status = run_with_config(->(path) { [bin, "-config=#{path}"] }, JSON.generate(config.merge('bogus' => 1)))
      expect(status.exitstatus).to eq(64)
    end

    it 'silk-daemon accepts client-config.json' do
      skip 'no silk-daemon binary in the workspace yet' unless self.class.workspace_bins.include?('silk-daemon')
      raise 'needs root for unshare -n: run via scripts/test' unless Process.uid.zero?

      bin = binary('silk-daemon')
      links = [cf_network_link('network' => ['10.255.0.0/20', '10.254.0.0/20']), vpa_link]
      props = { 'ca_cert' => 'CA', 'client_cert' => 'C', 'client_key' => 'K', 'ipv6' => { 'enable' => false } }
      text = release.job('silk-daemon').template('config/client-config.json').render(props, consumes: links)
      # The daemon creates its datastore before it reads the certificates: that one path goes to
      # a temporary directory so the check writes nothing outside it.
      Dir.mktmpdir do |state|
        config = JSON.parse(text).merge('datastore' => File.join(state, 'silk', 'store.json'))
        _out, err, status = run_with_config(->(path) { [bin, "-config=#{path}"] }, JSON.generate(config), wrap: %w[unshare -n])
        expect(status.exitstatus).not_to eq(64), "config rejected: #{err}"
        expect(err).to include('/var/vcap/jobs/silk-daemon/config/certs/')
      end
    end
  end
end
