# frozen_string_literal: true

module BoshTemplate
  RSpec.describe 'netmon job' do
    let(:job) { release.job('netmon') }

    it 'renders config/netmon.json with upstream defaults' do
      expect(JSON.parse(job.template('config/netmon.json').render({}))).to eq(
        'metron_address' => '127.0.0.1:3457', 'poll_interval' => 30, 'interface_name' => 'silk-vtep',
        'log_level' => 'info', 'log_prefix' => 'cfnetworking',
        'iptables_lock_file' => '/var/vcap/data/garden-cni/iptables.lock',
        'telemetry_enabled' => false, 'telemetry_interval' => 600
      )
    end

    it 'rejects a poll interval below one second' do
      expect { job.template('config/netmon.json').render({ 'poll_interval' => 0 }) }
        .to raise_error('poll_interval must be at least 1')
    end

    it 'rejects telemetry without an interval' do
      expect { job.template('config/netmon.json').render({ 'telemetry_enabled' => true, 'telemetry_interval' => 0 }) }
        .to raise_error('telemetry_interval must be at least 1 when telemetry_enabled is true')
    end

    it 'runs bin/start under bpm with NET_RAW and NET_ADMIN' do
      process = YAML.safe_load(job.template('config/bpm.yml').render({}))['processes'][0]
      expect(process).to include('executable' => '/var/vcap/jobs/netmon/bin/start', 'capabilities' => %w[NET_RAW NET_ADMIN])
      expect(job.template('bin/start').render({}, consumes: [iptables_link('/x')])).to include('export PATH="/x:${PATH}"')
    end
  end
end
