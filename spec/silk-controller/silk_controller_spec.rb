# frozen_string_literal: true

module BoshTemplate
  RSpec.describe 'silk-controller job' do
    let(:job) { release.job('silk-controller') }
    let(:database) do
      { 'type' => 'postgres', 'username' => 'silk', 'password' => 'secret', 'host' => 'db.internal',
        'port' => 5524, 'name' => 'network_connectivity' }
    end
    let(:properties) do
      { 'ca_cert' => 'CA', 'server_cert' => 'CERT', 'server_key' => 'KEY', 'database' => database }
    end

    describe 'config/silk-controller.json' do
      let(:template) { job.template('config/silk-controller.json') }
      def render(props = properties, consumes: [])
        JSON.parse(template.render(props, consumes: consumes))
      end

      it 'renders every key upstream renders, with upstream defaults' do
        expect(render).to eq(
          'debug_server_port' => 46_455,
          'health_check_port' => 19_683,
          'listen_host' => '0.0.0.0',
          'listen_port' => 4103,
          'ca_cert_file' => '/var/vcap/jobs/silk-controller/config/certs/ca.crt',
          'server_cert_file' => '/var/vcap/jobs/silk-controller/config/certs/server.crt',
          'server_key_file' => '/var/vcap/jobs/silk-controller/config/certs/server.key',
          'network' => '10.255.0.0/16',
          'subnet_prefix_length' => 24,
          'database' => {
            'type' => 'postgres', 'user' => 'silk', 'password' => 'secret', 'host' => 'db.internal',
            'port' => 5524, 'timeout' => 120, 'database_name' => 'network_connectivity',
            'require_ssl' => false,
            'ca_cert' => '/var/vcap/jobs/silk-controller/config/certs/database_ca.crt',
            'skip_hostname_validation' => false
          },
          'lease_expiration_seconds' => 168 * 3600,
          'metron_port' => 3457,
          'staleness_threshold_seconds' => 3600,
          'metrics_emit_seconds' => 30,
          'log_prefix' => 'cfnetworking',
          'max_idle_connections' => 10,
          'max_open_connections' => 200,
          'connections_max_lifetime_seconds' => 3600
        )
      end

      it 'converts hours to seconds and passes database TLS settings' do
        props = properties.merge('subnet_lease_expiration_hours' => 2,
                                 'database' => database.merge('require_ssl' => true, 'skip_hostname_validation' => true,
                                                              'connect_timeout_seconds' => 7))
        config = render(props)
        expect(config['lease_expiration_seconds']).to eq(7200)
        expect(config['database']).to include('require_ssl' => true, 'skip_hostname_validation' => true, 'timeout' => 7)
      end

      it 'renders a list of overlay networks as a list' do
        config = render(properties.merge('network' => ['10.255.0.0/20', '10.255.96.0/21']))
        expect(config['network']).to eq(['10.255.0.0/20', '10.255.96.0/21'])
      end

      %w[username password port name type].each do |key|
        it "fails when database.#{key} is missing" do
          props = properties.merge('database' => database.reject { |k, _| k == key })
          expect { render(props) }.to raise_error("database.#{key} must be specified")
        end
      end

      it 'rejects an unknown driver' do
        expect { render(properties.merge('database' => database.merge('type' => 'sqlite'))) }
          .to raise_error('unknown driver sqlite')
      end

      it 'falls back to the database link address when database.host is unset' do
        props = properties.merge('database' => database.reject { |k, _| k == 'host' })
        expect(render(props, consumes: [database_link('10.0.0.9')])['database']['host']).to eq('10.0.0.9')
      end

      it 'fails without database.host and without a database link' do
        props = properties.merge('database' => database.reject { |k, _| k == 'host' })
        expect { render(props) }.to raise_error('must provide database link or set database.host')
      end

      [0, 31].each do |length|
        it "rejects subnet_prefix_length #{length}" do
          expect { render(properties.merge('subnet_prefix_length' => length)) }
            .to raise_error('subnet_prefix_length must be a value between 1-30')
        end
      end

      it 'rejects a subnet_prefix_length not smaller than the network' do
        expect { render(properties.merge('network' => '10.255.0.0/24', 'subnet_prefix_length' => 24)) }
          .to raise_error("subnet_prefix_length '24' must be smaller than the network '10.255.0.0/24'")
      end

      it 'rejects an unparsable network' do
        expect { render(properties.merge('network' => '10.255.0.300/16')) }
          .to raise_error(/\AInvalid network '10.255.0.300\/16': /)
      end

      it 'rejects overlapping networks' do
        expect { render(properties.merge('network' => ['10.255.0.0/16', '10.255.8.0/21'])) }
          .to raise_error("Invalid network: '10.255.0.0/16' overlaps '10.255.8.0/21'")
      end

      it 'rejects an empty network list' do
        expect { render(properties.merge('network' => [])) }.to raise_error('network must be provided')
      end

      it 'rejects a listen_ip with leading zeros' do
        expect { render(properties.merge('listen_ip' => '010.0.0.1')) }
          .to raise_error(/\AInvalid listen_ip '010.0.0.1': /)
      end
    end

    describe 'cf_network link' do
      it 'exports network and subnet_prefix_length as the operator set them' do
        expect(job.provided_link_properties('cf_network', 'network' => ['10.1.0.0/16'], 'subnet_prefix_length' => 26))
          .to eq('network' => ['10.1.0.0/16'], 'subnet_prefix_length' => 26)
      end
    end

    describe 'certificates' do
      it 'renders the PEM properties into their files' do
        expect(job.template('config/certs/ca.crt').render(properties)).to eq("CA\n")
        expect(job.template('config/certs/server.crt').render(properties)).to eq("CERT\n")
        expect(job.template('config/certs/server.key').render(properties)).to eq("KEY\n")
        expect(job.template('config/certs/database_ca.crt').render(properties)).to eq("\n")
        props = properties.merge('database' => database.merge('ca_cert' => 'DBCA'))
        expect(job.template('config/certs/database_ca.crt').render(props)).to eq("DBCA\n")
      end
    end

    describe 'config/bpm.yml' do
      it 'runs the controller with its config file and no privileges' do
        bpm = YAML.safe_load(job.template('config/bpm.yml').render(properties))
        expect(bpm).to eq('processes' => [{
          'name' => 'silk-controller',
          'executable' => '/var/vcap/packages/silk-controller/bin/silk-controller',
          'args' => ['-config=/var/vcap/jobs/silk-controller/config/silk-controller.json']
        }])
      end
    end

    describe 'monit' do
      it 'checks the bpm process and probes the debug server' do
        monit = job.template('monit').render(properties.merge('debug_port' => 1234))
        expect(monit).to include('check process silk-controller')
        expect(monit).to include('with pidfile /var/vcap/sys/run/bpm/silk-controller/silk-controller.pid')
        expect(monit).to include('start program "/var/vcap/jobs/bpm/bin/bpm start silk-controller"')
        expect(monit).to include('if failed host 127.0.0.1 port 1234 protocol HTTP')
        expect(monit).to include('request "/metrics"')
      end

      it 'is empty when disabled' do
        expect(job.template('monit').render(properties.merge('disable' => true)).strip).to eq('')
      end
    end

    describe 'bin/post-start' do
      it 'waits 25 tries for the debug server' do
        script = job.template('bin/post-start').render(properties)
        expect(script).to start_with("#!/bin/bash\n")
        expect(script).to include('wait_for_server_to_become_healthy "127.0.0.1:46455/metrics" 25')
      end

      it 'does nothing when disabled' do
        script = job.template('bin/post-start').render(properties.merge('disable' => true))
        expect(script).to include('exit 0')
        expect(script).not_to include('wait_for_server')
      end
    end

    describe 'bin/dns_health_check' do
      it 'fails on HTTP errors, not only on connection errors' do
        script = job.template('bin/dns_health_check').render(properties.merge('health_check_timeout_seconds' => 3))
        expect(script).to include('--fail')
        expect(script).to include('--connect-timeout 3')
        expect(script).to include('http://127.0.0.1:19683/health')
      end
    end

    describe 'bin/check_log_health' do
      it 'probes the debug server' do
        script = job.template('bin/check_log_health').render(properties)
        expect(script).to include('http://127.0.0.1:46455/metrics')
        expect(script).to include('Check passed')
      end
    end
  end
end
