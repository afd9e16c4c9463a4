# frozen_string_literal: true

module BoshTemplate
  RSpec.describe 'vxlan-policy-agent job' do
    let(:job) { release.job('vxlan-policy-agent') }
    let(:properties) { { 'ca_cert' => 'CA', 'client_cert' => 'CERT', 'client_key' => 'KEY' } }
    let(:links) { [cf_network_link, cni_config_link, iptables_link('/garden/bin')] }
    let(:instance) do
      InstanceSpec.new(ip: '10.0.16.15', address: 'cell.bosh', id: 'cell-guid', name: 'diego-cell',
                       deployment: 'cf', networks: { 'a' => { 'ip' => '10.0.16.15' }, 'b' => { 'ip' => '10.9.0.2' } })
    end

    describe 'config/vxlan-policy-agent.json' do
      let(:template) { job.template('config/vxlan-policy-agent.json') }
      def render(props = properties, consumes: links)
        JSON.parse(template.render(props, consumes: consumes, spec: instance))
      end

      it 'renders every key with upstream defaults' do
        expect(render).to eq(
          'log_level' => 'info',
          'log_prefix' => 'cfnetworking',
          'iptables_c2c_logging' => false,
          'iptables_asg_logging' => false,
          'iptables_accepted_udp_logs_per_sec' => 100,
          'poll_interval' => 5,
          'enable_asg_syncing' => true,
          'asg_poll_interval' => 60,
          'iptables_denied_logs_per_sec' => 1,
          'deny_networks' => { 'always' => [], 'running' => [], 'staging' => [] },
          'deny_networks_ipv6' => { 'always' => [], 'running' => [], 'staging' => [] },
          'outbound_connections' => { 'limit' => false, 'logging' => false, 'burst' => 1000, 'rate_per_sec' => 100,
                                      'dry_run' => false },
          'policy_server_url' => 'https://policy-server.service.cf.internal:4003',
          'metron_address' => '127.0.0.1:3457',
          'underlay_ips' => ['10.0.16.15', '10.9.0.2'],
          'debug_server_port' => 8721,
          'force_policy_poll_cycle_port' => 8722,
          'enable_overlay_ingress_rules' => false,
          'disable_container_network_policy' => false,
          'overlay_network' => ['10.255.0.0/16'],
          'ca_cert_file' => '/var/vcap/jobs/vxlan-policy-agent/config/certs/ca.crt',
          'client_cert_file' => '/var/vcap/jobs/vxlan-policy-agent/config/certs/client.crt',
          'client_key_file' => '/var/vcap/jobs/vxlan-policy-agent/config/certs/client.key',
          'cni_datastore_path' => '/var/vcap/data/container-metadata/store.json',
          'iptables_lock_file' => '/var/vcap/data/garden-cni/iptables.lock',
          'debug_server_host' => '127.0.0.1',
          'client_timeout_seconds' => 5,
          'vni' => 1,
          'force_policy_poll_cycle_host' => '127.0.0.1',
          'enable_ipv6' => false,
          'loggregator' => { 'loggregator_use_v2_api' => false }
        )
      end

      it 'takes deny networks, logging and outbound connection limits (with dry_run) from the cni_config link' do
        cni = cni_config_link('iptables_logging' => true, 'iptables_denied_logs_per_sec' => 4,
                              'deny_networks' => { 'always' => ['10.0.0.0/8'] },
                              'deny_networks_ipv6' => { 'running' => ['fd00::/8'] },
                              'outbound_connections' => { 'limit' => true, 'burst' => 9, 'rate_per_sec' => 3, 'dry_run' => true })
        config = render(properties, consumes: [cf_network_link, cni])
        expect(config).to include(
          'iptables_asg_logging' => true, 'iptables_c2c_logging' => false, 'iptables_denied_logs_per_sec' => 4,
          'deny_networks' => { 'always' => ['10.0.0.0/8'], 'running' => [], 'staging' => [] },
          'deny_networks_ipv6' => { 'always' => [], 'running' => ['fd00::/8'], 'staging' => [] },
          'outbound_connections' => { 'limit' => true, 'logging' => true, 'burst' => 9, 'rate_per_sec' => 3, 'dry_run' => true }
        )
      end

      it 'turns a single overlay network into a list and keeps a list' do
        expect(render(properties, consumes: [cf_network_link('network' => '10.1.0.0/16'), cni_config_link])['overlay_network'])
          .to eq(['10.1.0.0/16'])
        expect(render(properties, consumes: [cf_network_link('network' => ['10.1.0.0/16', '10.2.0.0/16']), cni_config_link])['overlay_network'])
          .to eq(['10.1.0.0/16', '10.2.0.0/16'])
      end

      it 'renders the loggregator v2 settings when enabled' do
        config = render(properties.merge('loggregator' => { 'use_v2_api' => true, 'v2_api_port' => 3459 }))
        expect(config['loggregator']).to eq(
          'loggregator_use_v2_api' => true,
          'loggregator_api_port' => 3459,
          'loggregator_ca_path' => '/var/vcap/jobs/vxlan-policy-agent/config/certs/loggregator/ca.crt',
          'loggregator_cert_path' => '/var/vcap/jobs/vxlan-policy-agent/config/certs/loggregator/client.crt',
          'loggregator_key_path' => '/var/vcap/jobs/vxlan-policy-agent/config/certs/loggregator/client.key',
          'loggregator_job_deployment' => 'cf',
          'loggregator_job_name' => 'diego-cell',
          'loggregator_job_index' => 'cell-guid',
          'loggregator_job_ip' => 'cell.bosh',
          'loggregator_job_origin' => 'vxlan-policy-agent',
          'loggregator_source_id' => 'vxlan-policy-agent',
          'loggregator_instance_id' => 'cell-guid'
        )
      end

      it 'builds the policy server URL and enables IPv6 from properties' do
        config = render(properties.merge('policy_server' => { 'hostname' => 'ps.example', 'internal_listen_port' => 9 },
                                         'ipv6' => { 'enable' => true }))
        expect(config).to include('policy_server_url' => 'https://ps.example:9', 'enable_ipv6' => true)
      end

      it 'fails without the cni_config link' do
        expect { render(properties, consumes: [cf_network_link]) }.to raise_error("Can't find link 'cni_config'")
      end
    end

    describe 'vpa link' do
      it 'exports the client certificates and the force poll port' do
        expect(job.provided_link_properties('vpa', properties)).to eq(
          'ca_cert' => 'CA', 'client_cert' => 'CERT', 'client_key' => 'KEY', 'force_policy_poll_cycle_port' => 8722
        )
      end
    end

    describe 'config/bpm.yml' do
      it 'runs bin/start privileged with NET_RAW, NET_ADMIN and the shared data directories' do
        process = YAML.safe_load(job.template('config/bpm.yml').render(properties))['processes'][0]
        expect(process).to eq(
          'name' => 'vxlan-policy-agent',
          'executable' => '/var/vcap/jobs/vxlan-policy-agent/bin/start',
          'capabilities' => %w[NET_RAW NET_ADMIN],
          'unsafe' => { 'privileged' => true },
          'additional_volumes' => [
            { 'path' => '/var/vcap/data/container-metadata', 'writable' => true },
            { 'path' => '/var/vcap/data/garden-cni', 'writable' => true }
          ]
        )
      end
    end

    describe 'bin/start' do
      it 'puts garden iptables first on PATH and execs the agent' do
        script = job.template('bin/start').render(properties, consumes: links)
        expect(script).to include('export PATH="/garden/bin:${PATH}"')
        expect(script).to include('exec /var/vcap/packages/vxlan-policy-agent/bin/vxlan-policy-agent')
        expect(script).to include('-config-file=/var/vcap/jobs/vxlan-policy-agent/config/vxlan-policy-agent.json')
      end
    end

    describe 'bin/pre-start' do
      it 'empties the filter and nat tables under the shared lock' do
        script = job.template('bin/pre-start').render(properties, consumes: links)
        expect(script).to include('LOCK_FILE=/var/vcap/data/garden-cni/iptables.lock')
        expect(script).to include("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
        expect(script).to include("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n")
        expect(script).to include('seq 1 15')
      end
    end

    describe 'bin/post-start' do
      it 'waits 25 tries for the debug server' do
        expect(job.template('bin/post-start').render(properties))
          .to include('wait_for_server_to_become_healthy "127.0.0.1:8721/metrics" 25')
      end
    end

    describe 'monit' do
      it 'probes GET /metrics on the debug port' do
        monit = job.template('monit').render(properties)
        expect(monit).to include('check process vxlan-policy-agent')
        expect(monit).to include('if failed host 127.0.0.1 port 8721 protocol HTTP')
        expect(monit).to include('request "/metrics"')
        expect(job.template('monit').render(properties.merge('disable' => true)).strip).to eq('')
      end
    end

    describe 'certificates' do
      it 'renders empty loggregator certificates when unset' do
        expect(job.template('config/certs/loggregator/ca.crt').render(properties)).to eq("\n")
        props = properties.merge('loggregator' => { 'ca_cert' => 'LCA', 'cert' => 'LC', 'key' => 'LK' })
        expect(job.template('config/certs/loggregator/client.key').render(props)).to eq("LK\n")
      end
    end
  end
end
