# frozen_string_literal: true

module BoshTemplate
  RSpec.describe 'silk-datastore-syncer job' do
    let(:job) { release.job('silk-datastore-syncer') }

    it 'starts the syncer with the garden address and the metadata store' do
      script = job.template('bin/start').render({ 'sync_interval_in_seconds' => 7, 'log_level' => 'debug' })
      expect(script).to include(
        "-n 7 \\\n  -gardenNetwork unix \\\n  -gardenAddr /var/vcap/data/garden/garden.sock \\\n" \
        "  -silkFile /var/vcap/data/container-metadata/store.json \\\n  -silkFileOwner vcap \\\n" \
        "  -silkFileGroup vcap \\\n  -logLevel debug"
      )
    end

    it 'rejects an unknown garden network' do
      expect { job.template('bin/start').render({ 'garden' => { 'network' => 'udp' } }) }
        .to raise_error("garden.network must be unix or tcp, not 'udp'")
    end

    it 'mounts the metadata store and the garden socket directory' do
      process = YAML.safe_load(job.template('config/bpm.yml').render({}))['processes'][0]
      expect(process['additional_volumes'].map { |v| v['path'] })
        .to eq(['/var/vcap/data/container-metadata', '/var/vcap/data/garden'])
    end
  end
end
