# frozen_string_literal: true

module BoshTemplate
  RSpec.describe 'silk-daemon lifecycle' do
    let(:job) { release.job('silk-daemon') }
    let(:properties) { { 'ca_cert' => 'CA', 'client_cert' => 'CERT', 'client_key' => 'KEY' } }
    let(:links) { [cf_network_link, vpa_link, iptables_link('/garden/bin')] }

    def render(destination, props = properties, consumes: links)
      job.template(destination).render(props, consumes: consumes)
    end

    describe 'config/bpm.yml' do
      it 'runs the daemon privileged with NET_ADMIN and the healthchecker beside it' do
        bpm = YAML.safe_load(render('config/bpm.yml'))
        daemon, checker = bpm['processes']
        expect(daemon).to include(
          'name' => 'silk-daemon',
          'executable' => '/var/vcap/packages/silk-daemon/bin/silk-daemon',
          'args' => ['-config=/var/vcap/jobs/silk-daemon/config/client-config.json'],
          'capabilities' => ['NET_ADMIN'],
          'unsafe' => { 'privileged' => true }
        )
        expect(daemon['additional_volumes']).to include('path' => '/var/vcap/data/container-metadata', 'writable' => true)
        expect(checker).to eq(
          'name' => 'silk-daemon-healthchecker',
          'executable' => '/var/vcap/packages/silk-healthchecker/bin/healthchecker',
          'args' => ['-c', '/var/vcap/jobs/silk-daemon/config/healthchecker.yml'],
          'additional_volumes' => [{ 'path' => '/var/vcap/data/silk-daemon/counters', 'writable' => true }]
        )
      end

      it 'mounts the directory of a custom failure counter file' do
        props = properties.merge('healthchecker' => { 'failure_counter_file' => '/var/vcap/data/x/y/count' })
        checker = YAML.safe_load(render('config/bpm.yml', props))['processes'][1]
        expect(checker['additional_volumes']).to eq([{ 'path' => '/var/vcap/data/x/y', 'writable' => true }])
      end
    end

    describe 'config/healthchecker.yml' do
      it 'probes the daemon port' do
        config = YAML.safe_load(render('config/healthchecker.yml', properties.merge('listen_port' => 1111,
                                                                                     'logging' => { 'level' => 'debug' })))
        expect(config).to eq(
          'component_name' => 'silk-daemon-healthchecker',
          'failure_counter_file' => '/var/vcap/data/silk-daemon/counters/consecutive_healthchecker_failures.count',
          'log_level' => 'debug',
          'healthcheck_endpoint' => { 'host' => '127.0.0.1', 'port' => 1111 }
        )
      end
    end

    describe 'monit' do
      it 'watches the daemon and the healthchecker, which restarts the daemon through restart-monit-job' do
        monit = render('monit')
        expect(monit).to include('check process silk-daemon')
        expect(monit).to include('if failed host 127.0.0.1 port 23954 protocol HTTP')
        expect(monit).to include('check process silk-daemon-healthchecker')
        expect(monit).to include('bpm start silk-daemon -p silk-daemon-healthchecker')
        expect(monit).to include('exec "/var/vcap/packages/silk-healthchecker/bin/restart-monit-job silk-daemon ' \
                                 '/var/vcap/data/silk-daemon/counters/consecutive_healthchecker_failures.count"')
        expect(monit).to include('depends on silk-daemon')
      end

      it 'is empty when disabled' do
        expect(render('monit', properties.merge('disable' => true)).strip).to eq('')
      end
    end

    describe 'bin/pre-start' do
      it 'tears down the previous lease and VTEP, ignoring failure' do
        script = render('bin/pre-start')
        expect(script).to start_with("#!/bin/bash\n")
        expect(script).to include('export PATH="/garden/bin:${PATH}"')
        expect(script).to include('ip link del dev flannel.1')
        expect(script).to include("/var/vcap/packages/silk-daemon/bin/silk-teardown \\\n  -config=/var/vcap/jobs/silk-daemon/config/client-config.json || true")
        expect(script).not_to include('silk-daemon-bootstrap')
        expect(script).not_to include('ethtool')
      end

      it 'bootstraps router VMs after bosh-dns is up' do
        script = render('bin/pre-start', properties.merge('single_ip_only' => true))
        expect(script).to include('/var/vcap/jobs/bosh-dns/bin/wait')
        expect(script).to include('silk-daemon-bootstrap \\')
        expect(script).to include('--config=/var/vcap/jobs/silk-daemon/config/bootstrap-config.json')
        expect(script.index('bosh-dns/bin/wait')).to be < script.index('silk-daemon-bootstrap')
      end

      it 'turns checksum offloading off when asked' do
        script = render('bin/pre-start', properties.merge('disable_checksum_offloading' => true))
        expect(script).to include('/usr/sbin/ethtool -K eth0 tx-checksum-ip-generic off')
      end

      it 'defaults the iptables path when garden is not colocated' do
        expect(render('bin/pre-start', consumes: [cf_network_link, vpa_link])).to include('export PATH="/sbin:${PATH}"')
      end

      it 'does nothing when disabled' do
        script = render('bin/pre-start', properties.merge('disable' => true))
        expect(script).not_to include('silk-teardown')
      end
    end

    describe 'bin/post-start' do
      it 'waits 20 tries for the daemon port' do
        expect(render('bin/post-start')).to include('wait_for_server_to_become_healthy "127.0.0.1:23954" 20')
      end
    end

    describe 'bin/drain' do
      it 'waits for containers, stops the daemon, then releases the lease' do
        script = render('bin/drain', properties.merge('container_metadata_file_check_timeout' => 900))
        shutdown = script.index('silk-daemon-shutdown')
        teardown = script.index('bin/silk-teardown')
        expect(shutdown).to be < teardown
        expect(script).to include('--containerMetadataFile /var/vcap/data/container-metadata/store.json')
        expect(script).to include('--containerMetadataFileCheckTimeout 900')
        expect(script).to include('--silkDaemonUrl http://localhost:23954/ping')
        expect(script).to include('--silkDaemonPidPath /var/vcap/sys/run/bpm/silk-daemon/silk-daemon.pid')
        expect(script).to include('--iptablesLockFile /var/vcap/data/garden-cni/iptables.lock')
        expect(script).to include('%Y-%m-%dT%H:%M:%S.%NZ')
      end

      it 'logs epoch timestamps in deprecated format' do
        script = render('bin/drain', properties.merge('logging' => { 'format' => { 'timestamp' => 'deprecated' } }))
        expect(script).to include('date +"%s.%N"')
      end

      it 'prints 0 and does nothing else when disabled' do
        script = render('bin/drain', properties.merge('disable' => true))
        expect(script).to include("echo 0\nexit 0")
        expect(script).not_to include('silk-teardown')
      end
    end
  end
end
